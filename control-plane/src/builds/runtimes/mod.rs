//! Generated Dockerfiles and launchers, one per language runtime.

use berth_proto::domain::{AppSpec, Runtime};

/// Files a runtime adds to the build context (beside the user's code).
pub struct RuntimeFiles {
    pub dockerfile: String,
    /// (path in the context, contents)
    pub extra: Vec<(&'static str, Vec<u8>)>,
    /// The code is compiled into the image (Go), so the image depends on it.
    pub code_in_image: bool,
}

const PYTHON_LAUNCHER: &str = include_str!("run.py");
const NODE_LAUNCHER: &str = include_str!("run.js");
const NODE_CHECK_DEPS: &str = include_str!("check-deps.js");
const GO_BUILD: &str = include_str!("go-build.sh");

/// Frameworks whose `app` needs an ASGI server.
const ASGI_FRAMEWORKS: &[&str] = &["fastapi", "starlette", "quart", "litestar", "sanic"];
const ASGI_SERVERS: &[&str] = &["uvicorn", "hypercorn", "daphne"];

/// Requirement names (lowercase, before any version or extra).
fn requirement_names(requirements: &str) -> Vec<String> {
    requirements
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty() && !line.starts_with('-'))
        .map(|line| {
            line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .collect()
}

/// The requirements installed at build time: the user's, plus an ASGI
/// server when the app uses an ASGI framework without naming one.
pub fn python_requirements(user: Option<&str>) -> String {
    let user = user.unwrap_or("");
    let names = requirement_names(user);
    let needs_server = names.iter().any(|n| ASGI_FRAMEWORKS.contains(&n.as_str()))
        && !names.iter().any(|n| ASGI_SERVERS.contains(&n.as_str()));
    let mut out = user.trim_end().to_owned();
    if needs_server {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("uvicorn");
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The Dockerfile and launcher of a runtime app; `None` for a runtime this
/// control plane cannot build from code files. `dependency` reads an
/// uploaded dependency file by name.
pub fn files_for(
    spec: &AppSpec,
    base_image: &str,
    dependency: impl Fn(&str) -> Option<String>,
) -> Option<RuntimeFiles> {
    let requirements = dependency("requirements.txt");
    let requirements = requirements.as_deref();
    match spec.runtime {
        Runtime::Python => {
            let requirements = python_requirements(requirements);
            let install = if requirements.is_empty() {
                String::new()
            } else {
                "COPY requirements.txt /opt/berth/requirements.txt\n\
                 RUN pip install --no-cache-dir --no-input -r /opt/berth/requirements.txt\n"
                    .to_owned()
            };
            let dockerfile = format!(
                "FROM {base_image}\n{install}COPY berth/run.py /opt/berth/run.py\n\
                 WORKDIR /app/code\nENV PYTHONDONTWRITEBYTECODE=1\n\
                 CMD [\"python3\", \"/opt/berth/run.py\", {entry}]\n",
                entry = json_string(&spec.entry),
            );
            let mut extra = vec![("berth/run.py", PYTHON_LAUNCHER.as_bytes().to_vec())];
            if !requirements.is_empty() {
                extra.push(("requirements.txt", requirements.into_bytes()));
            }
            Some(RuntimeFiles {
                dockerfile,
                extra,
                code_in_image: false,
            })
        }
        Runtime::Node => {
            let manifest = dependency("package.json");
            let check = if manifest.is_some() {
                "COPY package.json /opt/berth/package.json\nRUN node /opt/berth/check-deps.js /opt/berth/package.json\n"
            } else {
                ""
            };
            let dockerfile = format!(
                "FROM {base_image}\nCOPY berth/run.js berth/check-deps.js /opt/berth/\n{check}\
                 WORKDIR /app/code\nENV NODE_ENV=production\n\
                 CMD [\"node\", \"/opt/berth/run.js\", {entry}]\n",
                entry = json_string(&spec.entry),
            );
            let mut extra = vec![
                ("berth/run.js", NODE_LAUNCHER.as_bytes().to_vec()),
                ("berth/check-deps.js", NODE_CHECK_DEPS.as_bytes().to_vec()),
            ];
            if let Some(manifest) = manifest {
                extra.push(("package.json", manifest.into_bytes()));
            }
            Some(RuntimeFiles {
                dockerfile,
                extra,
                code_in_image: false,
            })
        }
        Runtime::Go => {
            // Compiled in a build stage; the image holds the static binary
            // (and CA certificates for outbound TLS) and nothing else.
            let dockerfile = format!(
                "FROM {base_image} AS build\nCOPY code/ /src/\nCOPY berth/go-build.sh /opt/berth/go-build.sh\n\
                 RUN sh /opt/berth/go-build.sh /src /out/app\n\
                 FROM scratch\nCOPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n\
                 COPY --from=build /out/app /app/bin/app\nWORKDIR /app/code\nCMD [\"/app/bin/app\"]\n"
            );
            Some(RuntimeFiles {
                dockerfile,
                extra: vec![("berth/go-build.sh", GO_BUILD.as_bytes().to_vec())],
                code_in_image: true,
            })
        }
        Runtime::Dockerfile => None,
    }
}

fn json_string(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asgi_apps_get_a_server_unless_they_name_one() {
        assert_eq!(
            python_requirements(Some("fastapi==0.110\n")),
            "fastapi==0.110\nuvicorn\n"
        );
        assert_eq!(
            python_requirements(Some("FastAPI[all]>=0.1\nuvicorn[standard]\n")),
            "FastAPI[all]>=0.1\nuvicorn[standard]\n"
        );
        assert_eq!(python_requirements(Some("flask\n")), "flask\n");
        assert_eq!(python_requirements(None), "");
        assert_eq!(python_requirements(Some("# nothing\n")), "# nothing\n");
    }
}
