//! App uploads over HTTP: settings and code as JSON, or as
//! multipart/form-data with an archive streamed to the control plane chunk
//! by chunk (never held whole in the gateway).

use super::{rpc, Call};
use crate::error::ApiError;
use berth_proto::{domain::Runtime, pb};
use bytes::Bytes;
use futures::TryStreamExt;
use http::StatusCode;
use http_body_util::BodyStream;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Chunks of an archive as sent to the control plane.
const CHUNK: usize = 1 << 20;
/// Code files and text fields held in memory, together.
const MAX_FIELDS_BYTES: u64 = 16 << 20;
/// A whole multipart upload.
const MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// Which RPC an upload feeds.
pub enum Target {
    Create,
    /// Redeploy `app_id`; with no settings and no code, the current code again.
    Update {
        app_id: String,
    },
}

/// Settings given as text fields (multipart) or JSON members, by name.
#[derive(Default)]
struct Fields {
    values: Vec<(String, String)>,
    files: Vec<pb::SourceFile>,
}

impl Fields {
    fn get(&self, names: &[&str]) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_settings(&self) -> bool {
        !self.values.is_empty()
    }

    fn number<T: std::str::FromStr>(&self, names: &[&str]) -> Result<Option<T>, ApiError> {
        match self.get(names) {
            None | Some("") => Ok(None),
            Some(v) => {
                v.trim().parse().map(Some).map_err(|_| {
                    ApiError::bad_request(format!("{}: {v:?} is not a number", names[0]))
                })
            }
        }
    }

    /// The `AppSettings` these fields describe; Berth's names and the seed
    /// orchestrator's (`cpu_limit` in cores, `memory_limit` like `512m`) both work.
    fn settings(&self, has_archive: bool) -> Result<pb::AppSettings, ApiError> {
        let runtime = match self.get(&["runtime"]) {
            Some(r) => r.parse::<Runtime>().map_err(|_| {
                ApiError::bad_request(format!(
                    "runtime: {r:?} is not python, node, go or dockerfile"
                ))
            })?,
            None if has_archive => Runtime::Dockerfile,
            None => Runtime::Python,
        };
        let cpu_millis = match (
            self.number::<u32>(&["cpu_millis"])?,
            self.get(&["cpu_limit"]),
        ) {
            (Some(m), _) => m,
            (None, Some(cores)) => parse_cpu(cores)?,
            (None, None) => 0,
        };
        let memory_bytes = match (
            self.number::<u64>(&["memory_bytes"])?,
            self.get(&["memory_limit"]),
        ) {
            (Some(b), _) => b,
            (None, Some(text)) => parse_memory(text)?,
            (None, None) => 0,
        };
        let mut env: HashMap<String, String> = HashMap::new();
        for entry in self.all("env") {
            if entry.trim_start().starts_with('{') {
                let map: HashMap<String, String> = serde_json::from_str(entry)
                    .map_err(|e| ApiError::bad_request(format!("env: {e}")))?;
                env.extend(map);
            } else {
                let (k, v) = entry.split_once('=').ok_or_else(|| {
                    ApiError::bad_request(format!("env: {entry:?} is not KEY=VALUE"))
                })?;
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        Ok(pb::AppSettings {
            name: self.get(&["name"]).unwrap_or("").to_owned(),
            tenant: self.get(&["tenant"]).unwrap_or("").to_owned(),
            runtime: pb::Runtime::from(runtime) as i32,
            app_hostname: self
                .get(&["app_hostname", "hostname"])
                .unwrap_or("")
                .to_owned(),
            container_port: self.number(&["container_port", "port"])?.unwrap_or(0),
            cpu_millis,
            memory_bytes,
            min_instances: self.number(&["min_instances"])?,
            max_instances: self.number(&["max_instances"])?,
            env,
            entry: self.get(&["entry"]).unwrap_or("").to_owned(),
            command: self.all("command").map(str::to_owned).collect(),
            request_timeout_ms: self.number(&["request_timeout_ms"])?,
            max_body_bytes: self.number(&["max_body_bytes"])?,
            idle_timeout_s: self.number(&["idle_timeout_s"])?,
        })
    }
}

/// `1`, `0.5` (cores) or `500m` (millicores).
fn parse_cpu(text: &str) -> Result<u32, ApiError> {
    let text = text.trim();
    let millis = match text.strip_suffix('m') {
        Some(m) => m.parse::<u32>().ok(),
        None => text
            .parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && *c > 0.0 && *c <= 1024.0)
            .map(|c| (c * 1000.0).round() as u32),
    };
    millis.ok_or_else(|| {
        ApiError::bad_request(format!(
            "cpu_limit: {text:?}: use cores (1, 0.5) or millicores (500m)"
        ))
    })
}

/// `512m`, `512Mi`, `1g`, `1Gi`, `1048576b`; a bare number is MiB.
pub(crate) fn parse_memory(text: &str) -> Result<u64, ApiError> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let factor: u64 = match unit {
        "" | "m" | "mi" | "mb" | "mib" => 1 << 20,
        "b" => 1,
        "k" | "ki" | "kb" | "kib" => 1 << 10,
        "g" | "gi" | "gb" | "gib" => 1 << 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| factor > 0)
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "memory_limit: {text:?}: use 512m, 1g or a number of MiB"
            ))
        })
}

/// A code file's path as uploaded: the dependency fields get their usual names.
fn source_path(field: &str, file_name: Option<&str>) -> String {
    match field {
        "requirements" => "requirements.txt".to_owned(),
        "package_json" => "package.json".to_owned(),
        "go_mod" => "go.mod".to_owned(),
        _ => file_name.unwrap_or(field).to_owned(),
    }
}

/// One message of either upload stream.
enum Part {
    Header(Box<Option<pb::AppSettings>>, Vec<pb::SourceFile>, bool),
    Chunk(Vec<u8>),
}

fn create_message(part: Part) -> pb::CreateAppRequest {
    use pb::create_app_request::Part as P;
    pb::CreateAppRequest {
        part: Some(match part {
            Part::Header(settings, files, _) => P::Header(pb::CreateAppHeader {
                settings: *settings,
                files,
            }),
            Part::Chunk(bytes) => P::ArchiveChunk(bytes),
        }),
    }
}

fn update_message(app_id: &str, part: Part) -> pb::UpdateAppRequest {
    use pb::update_app_request::Part as P;
    pb::UpdateAppRequest {
        part: Some(match part {
            Part::Header(settings, files, reuse_code) => P::Header(pb::UpdateAppHeader {
                app_id: app_id.to_owned(),
                settings: *settings,
                files,
                reuse_code,
            }),
            Part::Chunk(bytes) => P::ArchiveChunk(bytes),
        }),
    }
}

/// Sends the upload in `call` to the control plane; returns the app.
pub async fn upload(call: Call, target: Target) -> Result<pb::App, ApiError> {
    let multipart = call.content_type().starts_with("multipart/form-data");
    let (tx, rx) = mpsc::channel::<Part>(4);
    let mut apps = pb::app_service_client::AppServiceClient::new(call.channel.clone())
        .max_decoding_message_size(16 << 20);
    let rpc_task = {
        let target = match &target {
            Target::Create => None,
            Target::Update { app_id } => Some(app_id.clone()),
        };
        tokio::spawn(async move {
            let stream = ReceiverStream::new(rx);
            match target {
                None => {
                    rpc(apps.create_app(tokio_stream::StreamExt::map(stream, create_message))).await
                }
                Some(id) => {
                    rpc(
                        apps.update_app(tokio_stream::StreamExt::map(stream, move |p| {
                            update_message(&id, p)
                        })),
                    )
                    .await
                }
            }
        })
    };
    let is_update = matches!(target, Target::Update { .. });
    let fed = if multipart {
        feed_multipart(call, is_update, &tx).await
    } else {
        feed_json(call, is_update, &tx).await
    };
    if let Err(err) = fed {
        // Cancel the call: the control plane sees a broken stream, never a
        // short archive it could take for the whole one.
        rpc_task.abort();
        return Err(err);
    }
    drop(tx);
    rpc_task
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

async fn send(tx: &mpsc::Sender<Part>, part: Part) -> Result<(), ApiError> {
    tx.send(part).await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upload_refused",
            "the control plane stopped taking the upload",
        )
    })
}

fn header(fields: &Fields, is_update: bool, has_archive: bool) -> Result<Part, ApiError> {
    let settings = if is_update && !fields.has_settings() {
        None
    } else {
        Some(fields.settings(has_archive)?)
    };
    let reuse = is_update && fields.files.is_empty() && !has_archive;
    Ok(Part::Header(
        Box::new(settings),
        fields.files.clone(),
        reuse,
    ))
}

#[derive(serde::Deserialize)]
struct JsonFile {
    path: String,
    content: String,
}

async fn feed_json(
    mut call: Call,
    is_update: bool,
    tx: &mpsc::Sender<Part>,
) -> Result<(), ApiError> {
    let body: serde_json::Map<String, serde_json::Value> = call.json().await?;
    let mut fields = Fields::default();
    for (name, value) in body {
        match (name.as_str(), value) {
            ("files", value) => {
                let files: Vec<JsonFile> = serde_json::from_value(value)
                    .map_err(|e| ApiError::bad_request(format!("files: {e}")))?;
                fields.files = files
                    .into_iter()
                    .map(|f| pb::SourceFile {
                        path: f.path,
                        content: f.content.into_bytes(),
                    })
                    .collect();
            }
            ("env", serde_json::Value::Object(map)) => {
                fields
                    .values
                    .push(("env".into(), serde_json::Value::Object(map).to_string()));
            }
            ("command", serde_json::Value::Array(args)) => {
                for arg in args {
                    let arg = arg
                        .as_str()
                        .ok_or_else(|| ApiError::bad_request("command: a list of strings"))?;
                    fields.values.push(("command".into(), arg.to_owned()));
                }
            }
            (_, serde_json::Value::Null) => {}
            (_, serde_json::Value::String(s)) => fields.values.push((name, s)),
            (_, v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                fields.values.push((name, v.to_string()))
            }
            (_, _) => return Err(ApiError::bad_request(format!("{name}: unexpected value"))),
        }
    }
    send(tx, header(&fields, is_update, false)?).await
}

async fn feed_multipart(
    mut call: Call,
    is_update: bool,
    tx: &mpsc::Sender<Part>,
) -> Result<(), ApiError> {
    let boundary = multer::parse_boundary(call.content_type())
        .map_err(|e| ApiError::bad_request(format!("content-type: {e}")))?;
    let stream = BodyStream::new(call.take_body()?)
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) });
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(MAX_UPLOAD_BYTES)
            .per_field(MAX_UPLOAD_BYTES),
    );
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut fields = Fields::default();
    let mut held: u64 = 0;
    let mut archive_started = false;
    let form_error = |e: multer::Error| ApiError::bad_request(format!("multipart body: {e}"));
    while let Some(mut field) = form.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        if archive_started {
            return Err(ApiError::bad_request(format!(
                "field {name:?} comes after the archive; put every setting before the file"
            )));
        }
        if matches!(name.as_str(), "archive" | "file") && file_name.is_some() {
            archive_started = true;
            send(tx, header(&fields, is_update, true)?).await?;
            let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
            while let Some(bytes) = field.chunk().await.map_err(form_error)? {
                let mut bytes: Bytes = bytes;
                while !bytes.is_empty() {
                    let take = (CHUNK - pending.len()).min(bytes.len());
                    pending.extend_from_slice(&bytes.split_to(take));
                    if pending.len() == CHUNK {
                        send(
                            tx,
                            Part::Chunk(std::mem::replace(&mut pending, Vec::with_capacity(CHUNK))),
                        )
                        .await?;
                    }
                }
            }
            if !pending.is_empty() {
                send(tx, Part::Chunk(pending)).await?;
            }
            continue;
        }
        let mut content = Vec::new();
        while let Some(bytes) = field.chunk().await.map_err(form_error)? {
            held += bytes.len() as u64;
            if held > MAX_FIELDS_BYTES {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("settings and code files together are over {MAX_FIELDS_BYTES} bytes; send large code as an archive"),
                ));
            }
            content.extend_from_slice(&bytes);
        }
        match file_name {
            Some(file_name) => fields.files.push(pb::SourceFile {
                path: source_path(&name, Some(&file_name)),
                content,
            }),
            None => {
                let value = String::from_utf8(content).map_err(|_| {
                    ApiError::bad_request(format!("field {name:?} is not UTF-8 text"))
                })?;
                fields.values.push((name, value));
            }
        }
    }
    if !archive_started {
        send(tx, header(&fields, is_update, false)?).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_style_limits_are_understood() {
        assert_eq!(parse_cpu("1").unwrap(), 1000);
        assert_eq!(parse_cpu("0.5").unwrap(), 500);
        assert_eq!(parse_cpu("250m").unwrap(), 250);
        assert!(parse_cpu("lots").is_err());
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_memory("256").unwrap(), 256 << 20);
        assert!(parse_memory("12parsecs").is_err());
    }
}
