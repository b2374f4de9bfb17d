//! Apps: their runtime, validated settings and uploaded source files.

use super::names::check_dns_label_value;
use crate::{pb, FieldError};
use std::collections::BTreeMap;

wire_enum!(
    /// How an app is built: a language runtime, or the user's own Dockerfile.
    Runtime, "runtime", Runtime { Python => "python", Node => "node", Go => "go", Dockerfile => "dockerfile" }
);

impl Runtime {
    /// The entry file used when none is named.
    pub fn default_entry(self) -> Option<&'static str> {
        match self {
            Runtime::Python => Some("main.py"),
            Runtime::Node => Some("index.js"),
            Runtime::Go => Some("main.go"),
            Runtime::Dockerfile => None,
        }
    }

    /// Dependency files the runtime installs from at build time.
    pub fn dependency_files(self) -> &'static [&'static str] {
        match self {
            Runtime::Python => &["requirements.txt"],
            Runtime::Node => &["package.json", "package-lock.json"],
            Runtime::Go => &["go.mod", "go.sum"],
            Runtime::Dockerfile => &[],
        }
    }
}

wire_enum!(
    /// A language the sandboxes run.
    Language, "language", Language {
        Python => "python",
        Javascript => "javascript",
        Typescript => "typescript",
        Java => "java",
        Cpp => "cpp",
        Go => "go",
        Rust => "rust"
    }
);

/// An execution's memory when its caller names none (most languages).
pub const DEFAULT_EXECUTION_MEMORY_BYTES: u64 = 128 << 20;

impl Language {
    /// The language a name or a common alias (`py`, `js`, `ts`, `c++`,
    /// `golang`, `rs`, …) stands for.
    pub fn from_alias(name: &str) -> Option<Self> {
        let name = match name.trim().to_ascii_lowercase().as_str() {
            "py" | "python3" => "python".to_owned(),
            "js" | "node" | "nodejs" => "javascript".to_owned(),
            "ts" => "typescript".to_owned(),
            "c++" => "cpp".to_owned(),
            "golang" => "go".to_owned(),
            "rs" => "rust".to_owned(),
            other => other.to_owned(),
        };
        name.parse().ok()
    }

    /// The memory a run of this language gets when its caller names none:
    /// enough for its compiler too, since a compile step gets no more than
    /// the run asked for (TypeScript's compiler alone takes about 180 MiB).
    pub fn default_memory_bytes(self) -> u64 {
        match self {
            Self::Typescript => 256 << 20,
            _ => DEFAULT_EXECUTION_MEMORY_BYTES,
        }
    }

    /// Every language's name, for messages: `python, javascript, …`.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub const DEFAULT_CONTAINER_PORT: u16 = 8080;
pub const DEFAULT_CPU_MILLIS: u32 = 1000;
pub const MIN_CPU_MILLIS: u32 = 50;
pub const MAX_CPU_MILLIS: u32 = 64_000;
pub const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
pub const MIN_MEMORY_BYTES: u64 = 16 << 20;
pub const MAX_MEMORY_BYTES: u64 = 256 << 30;
pub const DEFAULT_MIN_INSTANCES: u32 = 1;
pub const DEFAULT_MAX_INSTANCES: u32 = 10;
pub const MAX_INSTANCES: u32 = 100;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u32 = 30_000;
pub const MAX_REQUEST_TIMEOUT_MS: u32 = 3_600_000;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 << 20;
pub const MAX_MAX_BODY_BYTES: u64 = 64 << 30;
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 300;
pub const MAX_IDLE_TIMEOUT_S: u32 = 7 * 24 * 3600;
pub const MAX_ENV_VARS: usize = 128;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
pub const MAX_COMMAND_ARGS: usize = 64;
pub const MAX_FILES: usize = 200;
pub const MAX_PATH_BYTES: usize = 255;
/// All uploaded source files together (an archive has its own limits).
pub const MAX_SOURCE_BYTES: u64 = 8 << 20;

/// Validated settings of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub name: String,
    pub tenant: String,
    pub runtime: Runtime,
    pub app_hostname: Option<String>,
    pub container_port: u16,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub min_instances: u32,
    pub max_instances: u32,
    pub env: BTreeMap<String, String>,
    /// Entry file for runtime apps (`main.py`, …); empty for Dockerfile apps.
    pub entry: String,
    pub command: Vec<String>,
    /// Longest a request through the gateway may take.
    pub request_timeout_ms: u32,
    /// Largest request body the gateway accepts.
    pub max_body_bytes: u64,
    /// With `min_instances == 0`: idle time before scaling back to zero.
    pub idle_timeout_s: u32,
}

/// An optional bounded setting: the default when unset, refused outside `1..=max`.
fn bounded<T>(
    field: &str,
    value: Option<T>,
    default: T,
    max: T,
    unit: &str,
) -> Result<T, FieldError>
where
    T: PartialOrd + Copy + std::fmt::Display + From<u8>,
{
    match value {
        None => Ok(default),
        Some(v) if v >= T::from(1) && v <= max => Ok(v),
        Some(v) => Err(FieldError::new(
            field,
            format!("{v} is outside 1–{max} {unit}"),
        )),
    }
}

impl AppSpec {
    /// Checks `settings` (field names as in `AppSettings`), filling defaults.
    pub fn from_proto(settings: &pb::AppSettings) -> Result<Self, FieldError> {
        let name = settings.name.trim();
        check_dns_label_value(name).map_err(|m| FieldError::new("name", m))?;
        let tenant = if settings.tenant.is_empty() {
            "default"
        } else {
            settings.tenant.as_str()
        };
        check_dns_label_value(tenant).map_err(|m| FieldError::new("tenant", m))?;
        if tenant == super::ANONYMOUS_TENANT {
            return Err(FieldError::new(
                "tenant",
                format!("{tenant:?} is reserved for callers without a key"),
            ));
        }
        let runtime: Runtime = pb::Runtime::try_from(settings.runtime)
            .ok()
            .and_then(|r| Runtime::try_from(r).ok())
            .ok_or_else(|| {
                FieldError::new(
                    "runtime",
                    format!(
                        "must be python, node, go or dockerfile (got enum value {})",
                        settings.runtime
                    ),
                )
            })?;
        let app_hostname = match settings.app_hostname.trim() {
            "" => None,
            host => {
                super::NodeName::parse("app_hostname", host)?;
                Some(host.to_owned())
            }
        };
        let container_port = match settings.container_port {
            0 => DEFAULT_CONTAINER_PORT,
            port => u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                FieldError::new(
                    "container_port",
                    format!("{port} is not a TCP port (1–65535)"),
                )
            })?,
        };
        let cpu_millis = match settings.cpu_millis {
            0 => DEFAULT_CPU_MILLIS,
            cpu if (MIN_CPU_MILLIS..=MAX_CPU_MILLIS).contains(&cpu) => cpu,
            cpu => {
                return Err(FieldError::new(
                    "cpu_millis",
                    format!(
                    "{cpu} is outside {MIN_CPU_MILLIS}–{MAX_CPU_MILLIS} (thousandths of a core)"
                ),
                ))
            }
        };
        let memory_bytes = match settings.memory_bytes {
            0 => DEFAULT_MEMORY_BYTES,
            mem if (MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&mem) => mem,
            mem => {
                return Err(FieldError::new(
                    "memory_bytes",
                    format!("{mem} is outside {MIN_MEMORY_BYTES}–{MAX_MEMORY_BYTES} bytes"),
                ))
            }
        };
        let min_instances = settings.min_instances.unwrap_or(DEFAULT_MIN_INSTANCES);
        let max_instances = settings
            .max_instances
            .unwrap_or(DEFAULT_MAX_INSTANCES.max(min_instances));
        if max_instances == 0 || max_instances > MAX_INSTANCES {
            return Err(FieldError::new(
                "max_instances",
                format!("{max_instances} is outside 1–{MAX_INSTANCES}"),
            ));
        }
        if min_instances > max_instances {
            return Err(FieldError::new(
                "min_instances",
                format!("{min_instances} is more than max_instances ({max_instances})"),
            ));
        }
        let env = validate_env(&settings.env)?;
        if settings.command.len() > MAX_COMMAND_ARGS
            || settings
                .command
                .iter()
                .any(|a| a.len() > 4096 || a.contains('\0'))
        {
            return Err(FieldError::new(
                "command",
                format!("at most {MAX_COMMAND_ARGS} arguments of at most 4096 bytes, without NUL"),
            ));
        }
        let entry = match runtime.default_entry() {
            None if !settings.entry.is_empty() => {
                return Err(FieldError::new(
                    "entry",
                    "a dockerfile app has no entry file; use command",
                ))
            }
            None => String::new(),
            Some(default) if settings.entry.is_empty() => default.to_owned(),
            Some(_) => {
                check_source_path(&settings.entry).map_err(|m| FieldError::new("entry", m))?;
                settings.entry.clone()
            }
        };
        let request_timeout_ms = bounded(
            "request_timeout_ms",
            settings.request_timeout_ms,
            DEFAULT_REQUEST_TIMEOUT_MS,
            MAX_REQUEST_TIMEOUT_MS,
            "milliseconds",
        )?;
        let max_body_bytes = bounded(
            "max_body_bytes",
            settings.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
            MAX_MAX_BODY_BYTES,
            "bytes",
        )?;
        let idle_timeout_s = bounded(
            "idle_timeout_s",
            settings.idle_timeout_s,
            DEFAULT_IDLE_TIMEOUT_S,
            MAX_IDLE_TIMEOUT_S,
            "seconds",
        )?;
        Ok(Self {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            runtime,
            app_hostname,
            container_port,
            cpu_millis,
            memory_bytes,
            min_instances,
            max_instances,
            env,
            entry,
            command: settings.command.clone(),
            request_timeout_ms,
            max_body_bytes,
            idle_timeout_s,
        })
    }

    pub fn to_proto(&self) -> pb::AppSettings {
        pb::AppSettings {
            name: self.name.clone(),
            tenant: self.tenant.clone(),
            runtime: pb::Runtime::from(self.runtime) as i32,
            app_hostname: self.app_hostname.clone().unwrap_or_default(),
            container_port: u32::from(self.container_port),
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            min_instances: Some(self.min_instances),
            max_instances: Some(self.max_instances),
            env: self.env.clone().into_iter().collect(),
            entry: self.entry.clone(),
            command: self.command.clone(),
            request_timeout_ms: Some(self.request_timeout_ms),
            max_body_bytes: Some(self.max_body_bytes),
            idle_timeout_s: Some(self.idle_timeout_s),
        }
    }
}

fn validate_env(
    env: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    if env.len() > MAX_ENV_VARS {
        return Err(FieldError::new(
            "env",
            format!("has {} variables; the limit is {MAX_ENV_VARS}", env.len()),
        ));
    }
    let mut out = BTreeMap::new();
    for (key, value) in env {
        let field = format!("env[{key:?}]");
        let mut chars = key.chars();
        let name_ok = key.len() <= 128
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(FieldError::new(
                field,
                "names are letters, digits and '_', not starting with a digit, at most 128",
            ));
        }
        if key == "PORT" {
            return Err(FieldError::new(
                field,
                "PORT is set by Berth from container_port",
            ));
        }
        if value.len() > MAX_ENV_VALUE_BYTES || value.contains('\0') {
            return Err(FieldError::new(
                field,
                format!("values are at most {MAX_ENV_VALUE_BYTES} bytes, without NUL"),
            ));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

/// A relative path of a source file: `a-z A-Z 0-9 . _ - /`, no `..`, no
/// leading `/`, at most [`MAX_PATH_BYTES`].
pub fn check_source_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(format!("paths are 1–{MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; paths are relative to the app's root"
        ));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(format!(
            "{path:?} holds {bad:?}; paths use letters, digits, '.', '_', '-' and '/'"
        ));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!("{path:?} has an empty, '.' or '..' component"));
    }
    Ok(())
}

/// Checks uploaded source files: paths, count, total size, no duplicates,
/// and that `entry` is among them.
pub fn check_source_files(files: &[pb::SourceFile], entry: &str) -> Result<(), FieldError> {
    if files.len() > MAX_FILES {
        return Err(FieldError::new(
            "files",
            format!("has {} files; the limit is {MAX_FILES}", files.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for (i, file) in files.iter().enumerate() {
        check_source_path(&file.path)
            .map_err(|m| FieldError::new(format!("files[{i}].path"), m))?;
        if !seen.insert(file.path.as_str()) {
            return Err(FieldError::new(
                format!("files[{i}].path"),
                format!("{:?} is given twice", file.path),
            ));
        }
        total += file.content.len() as u64;
    }
    if total > MAX_SOURCE_BYTES {
        return Err(FieldError::new(
            "files",
            format!("are {total} bytes together; the limit is {MAX_SOURCE_BYTES}"),
        ));
    }
    if !entry.is_empty() && !seen.contains(entry) {
        return Err(FieldError::new(
            "entry",
            format!("{entry:?} is not among the uploaded files"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> pb::AppSettings {
        pb::AppSettings {
            name: "hello".into(),
            runtime: pb::Runtime::Python as i32,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let spec = AppSpec::from_proto(&settings()).unwrap();
        assert_eq!(spec.tenant, "default");
        assert_eq!(spec.container_port, 8080);
        assert_eq!(spec.cpu_millis, 1000);
        assert_eq!(spec.memory_bytes, 512 << 20);
        assert_eq!((spec.min_instances, spec.max_instances), (1, 10));
        assert_eq!(spec.entry, "main.py");
        let zero = AppSpec::from_proto(&pb::AppSettings {
            min_instances: Some(0),
            ..settings()
        })
        .unwrap();
        assert_eq!(zero.min_instances, 0, "scale to zero is kept");
    }

    #[test]
    fn bad_settings_name_their_field() {
        let cases: Vec<(pb::AppSettings, &str)> = vec![
            (
                pb::AppSettings {
                    name: "Hello World".into(),
                    ..settings()
                },
                "name",
            ),
            (
                pb::AppSettings {
                    runtime: 0,
                    ..settings()
                },
                "runtime",
            ),
            (
                pb::AppSettings {
                    runtime: 42,
                    ..settings()
                },
                "runtime",
            ),
            (
                pb::AppSettings {
                    container_port: 70000,
                    ..settings()
                },
                "container_port",
            ),
            (
                pb::AppSettings {
                    cpu_millis: 10,
                    ..settings()
                },
                "cpu_millis",
            ),
            (
                pb::AppSettings {
                    memory_bytes: 1,
                    ..settings()
                },
                "memory_bytes",
            ),
            (
                pb::AppSettings {
                    min_instances: Some(5),
                    max_instances: Some(2),
                    ..settings()
                },
                "min_instances",
            ),
            (
                pb::AppSettings {
                    max_instances: Some(1000),
                    ..settings()
                },
                "max_instances",
            ),
            (
                pb::AppSettings {
                    app_hostname: "not a host".into(),
                    ..settings()
                },
                "app_hostname",
            ),
            (
                pb::AppSettings {
                    env: [("PORT".into(), "1".into())].into(),
                    ..settings()
                },
                "env[\"PORT\"]",
            ),
            (
                pb::AppSettings {
                    env: [("1X".into(), "1".into())].into(),
                    ..settings()
                },
                "env[\"1X\"]",
            ),
            (
                pb::AppSettings {
                    entry: "../x.py".into(),
                    ..settings()
                },
                "entry",
            ),
        ];
        for (bad, field) in cases {
            let err = AppSpec::from_proto(&bad).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn source_files_are_checked() {
        let file = |path: &str| pb::SourceFile {
            path: path.into(),
            content: b"x".to_vec(),
        };
        assert!(check_source_files(&[file("main.py"), file("lib/util.py")], "main.py").is_ok());
        assert_eq!(
            check_source_files(&[file("app.py")], "main.py")
                .unwrap_err()
                .field,
            "entry"
        );
        assert_eq!(
            check_source_files(&[file("main.py"), file("main.py")], "main.py")
                .unwrap_err()
                .field,
            "files[1].path"
        );
        for bad in ["/etc/passwd", "a/../b", "a//b", "sp ace.py", "./x"] {
            assert_eq!(
                check_source_files(&[file(bad)], "").unwrap_err().field,
                "files[0].path",
                "{bad}"
            );
        }
    }
}
