//! Code executions over HTTP: seed 002's `/execute`, `/validate` and
//! `/info` in its shapes, and `/v1/executions`. Any valid API key may run
//! code (its tenant is recorded) and see or cancel its tenant's runs (an
//! admin key, every run); another tenant's run is `404`.
//! `--open-executions` lets callers without a key run code under a rate
//! limit of their own; a key that is presented must still be valid.

use super::{json, not_found, rpc, Call};
use crate::{body::ProxyBody, error::ApiError};
use berth_proto::{
    domain::{ExecutionState, Language},
    pb::{self, execution_service_client::ExecutionServiceClient},
};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json as j, Value};

type Answer = Result<Response<ProxyBody>, ApiError>;

pub fn is_execution_path(path: &str) -> bool {
    matches!(path, "/execute" | "/validate" | "/info")
        || path == "/v1/executions"
        || path.starts_with("/v1/executions/")
}

fn client(call: &Call) -> ExecutionServiceClient<super::Channel> {
    ExecutionServiceClient::new(call.channel.clone())
}

/// Seed 002's request, with Berth's additions.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedExecute {
    code: String,
    #[serde(default)]
    input_data: Option<String>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    language: Option<String>,
    /// Bytes, or `128m`-style text.
    #[serde(default)]
    memory: Option<Value>,
}

/// `/v1/executions` request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewExecution {
    language: String,
    code: String,
    #[serde(default)]
    stdin: String,
    #[serde(default)]
    timeout_ms: u32,
    #[serde(default)]
    memory_bytes: u64,
    /// Wait for the result (default) or answer at once with the queued run.
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

/// The language a request names: `400 unknown_language` naming it when
/// there is no such language.
fn language(name: &str) -> Result<i32, ApiError> {
    Language::from_alias(name)
        .map(|l| pb::Language::from(l) as i32)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_language",
                format!(
                    "language: {name:?} is unknown; one of {}",
                    Language::names()
                ),
            )
        })
}

fn state_name(state: i32) -> String {
    pb::ExecutionState::try_from(state)
        .ok()
        .and_then(|s| ExecutionState::try_from(s).ok())
        .map_or("unknown".to_owned(), |s| s.to_string())
}

/// An execution as `/v1/executions` shows it.
pub fn view(e: &pb::Execution) -> Value {
    serde_json::to_value(berth_proto::views::ExecutionView::from(e)).unwrap_or_default()
}

fn memory_bytes(value: Option<&Value>) -> Result<u64, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ApiError::bad_request("memory: a whole number of bytes")),
        Some(Value::String(s)) => super::forms::parse_memory(s),
        Some(_) => Err(ApiError::bad_request("memory: bytes, or text like 128m")),
    }
}

pub async fn route(mut call: Call, caller: super::Caller) -> Answer {
    let tenant = caller.tenant.clone();
    // Whose executions the caller sees: its tenant's, or all for an admin.
    let owner = if caller.admin {
        String::new()
    } else {
        caller.tenant
    };
    let segments: Vec<String> = call.segments.clone();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (call.method.clone(), segments.as_slice()) {
        (Method::POST, ["execute"]) => {
            let body: SeedExecute = call.json().await?;
            let timeout_ms = match body.timeout {
                None => 0,
                Some(t) if t.is_finite() && t > 0.0 => {
                    (t * 1000.0).round().min(u32::MAX as f64) as u32
                }
                Some(t) => {
                    return Err(ApiError::bad_request(format!(
                        "timeout: {t} is not a number of seconds"
                    )))
                }
            };
            // Seed 002's answer for what breaks a limit: `rejected`.
            let language = match language(body.language.as_deref().unwrap_or("python")) {
                Ok(language) => language,
                Err(unknown) => {
                    return Ok(json(
                        StatusCode::OK,
                        &j!({
                            "output": "",
                            "error": unknown.message,
                            "executionTime": 0.0,
                            "status": "rejected",
                        }),
                    ))
                }
            };
            let request = pb::ExecuteRequest {
                tenant,
                language,
                code: body.code,
                stdin: body.input_data.unwrap_or_default().into_bytes(),
                timeout_ms,
                memory_bytes: memory_bytes(body.memory.as_ref())?,
            };
            let e = rpc(client(&call).execute(request)).await?;
            let state = pb::ExecutionState::try_from(e.state).unwrap_or(pb::ExecutionState::Failed);
            let status = match state {
                pb::ExecutionState::Succeeded => "success".to_owned(),
                pb::ExecutionState::Failed => "error".to_owned(),
                _ => state_name(e.state),
            };
            let mut error = String::from_utf8_lossy(&e.stderr).into_owned();
            if !e.error.is_empty() {
                if !error.is_empty() && !error.ends_with('\n') {
                    error.push('\n');
                }
                error.push_str(&e.error);
            }
            Ok(json(
                StatusCode::OK,
                &j!({
                    "output": String::from_utf8_lossy(&e.stdout),
                    "error": error,
                    "executionTime": f64::from(e.wall_time_ms) / 1000.0,
                    "status": status,
                }),
            ))
        }
        (Method::POST, ["validate"]) => {
            #[derive(Deserialize)]
            struct Validate {
                code: String,
                #[serde(default)]
                language: Option<String>,
            }
            let body: Validate = call.json().await?;
            let answer = rpc(client(&call).validate_code(pb::ValidateCodeRequest {
                language: language(body.language.as_deref().unwrap_or("python"))?,
                code: body.code,
            }))
            .await?;
            let diagnostics = |list: &[pb::CodeDiagnostic]| -> Vec<Value> {
                list.iter()
                    .map(|d| j!({ "line": d.line, "column": d.column, "message": d.message }))
                    .collect()
            };
            Ok(json(
                StatusCode::OK,
                &j!({
                    "isValid": answer.valid,
                    "errors": diagnostics(&answer.errors),
                    "warnings": diagnostics(&answer.warnings),
                }),
            ))
        }
        (Method::GET, ["info"]) | (Method::GET, ["v1", "executions", "info"]) => {
            let info =
                rpc(client(&call).get_execution_info(pb::GetExecutionInfoRequest {})).await?;
            let languages: Vec<Value> = info
                .languages
                .iter()
                .map(|l| {
                    let name = pb::Language::try_from(l.language)
                        .ok()
                        .and_then(|x| Language::try_from(x).ok())
                        .map_or("unknown".to_owned(), |x| x.to_string());
                    j!({ "language": name, "version": l.version })
                })
                .collect();
            Ok(json(
                StatusCode::OK,
                &j!({
                    "service": "berth executions",
                    "languages": languages,
                    "limits": {
                        "defaultTimeout": f64::from(info.default_timeout_ms) / 1000.0,
                        "maxTimeout": f64::from(info.max_timeout_ms) / 1000.0,
                        "defaultMemoryBytes": info.default_memory_bytes,
                        "maxMemoryBytes": info.max_memory_bytes,
                        "maxCodeBytes": info.max_code_bytes,
                    },
                }),
            ))
        }
        (Method::POST, ["v1", "executions"]) => {
            let body: NewExecution = call.json().await?;
            let request = pb::ExecuteRequest {
                tenant,
                language: language(&body.language)?,
                code: body.code,
                stdin: body.stdin.into_bytes(),
                timeout_ms: body.timeout_ms,
                memory_bytes: body.memory_bytes,
            };
            let e = if body.wait {
                rpc(client(&call).execute(request)).await?
            } else {
                rpc(client(&call).submit_execution(request)).await?
            };
            let status = if body.wait {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json(status, &view(&e)))
        }
        (Method::GET, ["v1", "executions", id]) => {
            let e = rpc(client(&call).get_execution(pb::GetExecutionRequest {
                execution_id: id.to_string(),
                tenant: owner,
            }))
            .await?;
            Ok(json(StatusCode::OK, &view(&e)))
        }
        (Method::POST, ["v1", "executions", id, "cancel"]) => {
            let e = rpc(client(&call).cancel_execution(pb::CancelExecutionRequest {
                execution_id: id.to_string(),
                tenant: owner,
            }))
            .await?;
            Ok(json(StatusCode::OK, &view(&e)))
        }
        _ => Err(not_found(&call)),
    }
}
