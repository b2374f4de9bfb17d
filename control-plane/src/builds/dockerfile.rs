//! What a user's Dockerfile may build on: any image but another tenant's.
//!
//! App images are named `berth-app/{tenant}/{app}:{digest}` ([`repository`]).
//! Every image a Dockerfile names — in `FROM`, `COPY --from=` or `RUN
//! --mount=from=` — is checked here, once, before anything is stored: one
//! of another tenant's, one of the older `berth-app-…` names (which do not
//! say the tenant unambiguously), or one named through a variable (which
//! could be anything once expanded) is refused with the line it is on.

/// The first path component of every app image.
pub const REPOSITORY_ROOT: &str = "berth-app";

/// Largest Dockerfile read, in bytes.
pub const MAX_DOCKERFILE_BYTES: usize = 1 << 20;

/// The repository of `app`'s images in `tenant`: tenant and app names are
/// DNS labels, so no two pairs give one repository.
pub fn repository(tenant: &str, app: &str) -> String {
    format!("{REPOSITORY_ROOT}/{tenant}/{app}")
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    #[error("Dockerfile line {line}: {reference:?} names an image through a variable; name it literally")]
    Variable { line: usize, reference: String },
    #[error("Dockerfile line {line}: {reference:?} is not one of this tenant's images")]
    OtherTenant { line: usize, reference: String },
    #[error("the Dockerfile is over {MAX_DOCKERFILE_BYTES} bytes")]
    TooLarge,
}

/// Checks every image `text` names for a build of `tenant`.
pub fn check(text: &str, tenant: &str) -> Result<(), DockerfileError> {
    if text.len() > MAX_DOCKERFILE_BYTES {
        return Err(DockerfileError::TooLarge);
    }
    let mut stages: Vec<String> = Vec::new();
    for (line, instruction) in instructions(text) {
        let mut words = instruction.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let words: Vec<&str> = words.collect();
        match keyword.to_ascii_lowercase().as_str() {
            "from" => {
                let mut rest = words.iter().filter(|w| !w.starts_with("--"));
                if let Some(image) = rest.next() {
                    if !stages.iter().any(|s| s.eq_ignore_ascii_case(image)) {
                        check_image(image, tenant, line)?;
                    }
                }
                if let (Some(as_), Some(name)) = (rest.next(), rest.next()) {
                    if as_.eq_ignore_ascii_case("as") {
                        stages.push((*name).to_owned());
                    }
                }
            }
            "copy" | "add" | "run" => {
                for word in words.iter().take_while(|w| w.starts_with("--")) {
                    let lower = word.to_ascii_lowercase();
                    let from = if let Some(from) = lower.strip_prefix("--from=") {
                        Some(&word[word.len() - from.len()..])
                    } else if lower.starts_with("--mount=") {
                        word["--mount=".len()..]
                            .split(',')
                            .find_map(|pair| pair.strip_prefix("from="))
                    } else {
                        None
                    };
                    let Some(from) = from else { continue };
                    // A stage by name; a stage by number is no app image.
                    if !stages.iter().any(|s| s.eq_ignore_ascii_case(from)) {
                        check_image(from, tenant, line)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_image(reference: &str, tenant: &str, line: usize) -> Result<(), DockerfileError> {
    if reference.contains('$') {
        return Err(DockerfileError::Variable {
            line,
            reference: reference.to_owned(),
        });
    }
    // The names the engine reads as its own local ones.
    let lower = reference.to_ascii_lowercase();
    let mut name = lower.as_str();
    for prefix in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        name = name.strip_prefix(prefix).unwrap_or(name);
    }
    name = name.strip_prefix("library/").unwrap_or(name);
    let own = format!("{}/", repository(tenant, "").trim_end_matches('/'));
    let app_image = name.starts_with(&format!("{REPOSITORY_ROOT}/"))
        || name.starts_with(&format!("{REPOSITORY_ROOT}-"));
    if app_image && !name.starts_with(&own) {
        return Err(DockerfileError::OtherTenant {
            line,
            reference: reference.to_owned(),
        });
    }
    Ok(())
}

/// The Dockerfile's instructions, continuation lines joined, comments and
/// blank lines left out, each with the line it starts on.
fn instructions(text: &str) -> Vec<(usize, String)> {
    let mut escape = '\\';
    let mut directives = true;
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if directives {
            match line.strip_prefix('#').map(str::trim) {
                Some(directive) if directive.to_ascii_lowercase().starts_with("escape") => {
                    if let Some((_, value)) = directive.split_once('=') {
                        if let Some(c) = value.trim().chars().next() {
                            escape = c;
                        }
                    }
                    continue;
                }
                Some(directive) if directive.contains('=') => continue,
                _ => directives = false,
            }
        }
        if line.starts_with('#') || (line.is_empty() && current.is_none()) {
            continue;
        }
        let (start, mut text) = current.take().unwrap_or((index + 1, String::new()));
        match line.strip_suffix(escape) {
            Some(body) => {
                text.push_str(body);
                text.push(' ');
                current = Some((start, text));
            }
            None => {
                text.push_str(line);
                out.push((start, text));
            }
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> DockerfileError {
        check(text, "acme").unwrap_err()
    }

    #[test]
    fn public_and_own_images_are_fine() {
        for ok in [
            "FROM berth/python:3.11-bookworm\nRUN echo hi\n",
            "FROM debian:bookworm AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /out\n",
            "FROM berth-app/acme/shop:0123456789ab\n",
            "FROM --platform=linux/amd64 busybox\nCOPY --from=0 /a /b\n",
            "# syntax=docker/dockerfile:1\nFROM alpine\n",
        ] {
            assert_eq!(check(ok, "acme"), Ok(()), "{ok}");
        }
    }

    #[test]
    fn another_tenants_images_are_refused_however_named() {
        for (text, line) in [
            ("FROM berth-app/globex/shop:abc\n", 1),
            ("FROM docker.io/berth-app/globex/shop:abc\n", 1),
            ("FROM DOCKER.IO/Berth-App/globex/shop\n", 1),
            ("FROM berth-app-acme-shop:abc\n", 1),
            ("FROM docker.io/library/berth-app-globex-x:abc\n", 1),
            (
                "FROM alpine\nCOPY --from=berth-app/globex/shop:abc /secret /s\n",
                2,
            ),
            (
                "FROM alpine\nRUN --mount=type=bind,from=berth-app/globex/x,target=/m true\n",
                2,
            ),
            ("FROM alpine\nRUN true\nFROM \\\n  berth-app/globex/x\n", 3),
            ("FROM berth-app/acme-evil/x\n", 1),
        ] {
            match refused(text) {
                DockerfileError::OtherTenant { line: l, .. } => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn variables_in_image_names_are_refused() {
        assert!(matches!(
            refused("ARG IMG=berth-app/globex/x\nFROM ${IMG}\n"),
            DockerfileError::Variable { line: 2, .. }
        ));
        assert!(matches!(
            refused("FROM alpine\nCOPY --from=$SRC /a /b\n"),
            DockerfileError::Variable { line: 2, .. }
        ));
    }

    #[test]
    fn the_escape_directive_changes_how_lines_continue() {
        let text = "# escape=`\nFROM alpine\nRUN echo `\n  hi\nFROM `\n  berth-app/globex/x\n";
        assert!(matches!(
            refused(text),
            DockerfileError::OtherTenant { line: 5, .. }
        ));
    }
}
