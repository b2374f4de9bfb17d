//! Which images a tenant's Dockerfile names, and whether it may.
//!
//! App images are named `apps.berth.invalid/{tenant}/{app}:{digest}`
//! ([`app_repository`]): `.invalid` never resolves (RFC 2606), so no engine
//! ever pulls an app image from anywhere, and tenant and app names are DNS
//! labels, so no two apps share a repository. [`image_references`] reads
//! every image a Dockerfile names — in `FROM`, `COPY --from=`, `RUN
//! --mount=from=`, also behind `ONBUILD` — the way Docker's parser does
//! (parser directives, line continuations with blank and comment lines in
//! between, a byte-order mark). The control plane refuses a Dockerfile that
//! names another tenant's image ([`check`]); the agent resolves the same
//! references on its engine and refuses any image labelled for another
//! tenant, so an image reached by another name (an ID) is caught there.

/// The registry part of every app image: a name that never resolves.
pub const APP_IMAGE_REGISTRY: &str = "apps.berth.invalid";

/// Largest Dockerfile read, in bytes.
pub const MAX_DOCKERFILE_BYTES: usize = 1 << 20;

/// The repository of `app`'s images in `tenant`.
pub fn app_repository(tenant: &str, app: &str) -> String {
    format!("{APP_IMAGE_REGISTRY}/{tenant}/{app}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    #[error("Dockerfile line {line}: {reference:?} is not a plain image name (no variables, quotes or escapes); name the image plainly")]
    NotPlain { line: usize, reference: String },
    #[error(
        "Dockerfile line {line}: {reference:?} looks like an image ID; name the image by its name"
    )]
    ImageId { line: usize, reference: String },
    #[error("Dockerfile line {line}: {reference:?} is not one of this tenant's images")]
    OtherTenant { line: usize, reference: String },
    #[error("the Dockerfile is over {MAX_DOCKERFILE_BYTES} bytes")]
    TooLarge,
}

/// An image a Dockerfile names, and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub line: usize,
    pub reference: String,
}

/// Every image `text` names (build stages named in it left out), each
/// checked to be a plain name and no image ID.
pub fn image_references(text: &str) -> Result<Vec<ImageReference>, DockerfileError> {
    if text.len() > MAX_DOCKERFILE_BYTES {
        return Err(DockerfileError::TooLarge);
    }
    let mut stages: Vec<String> = Vec::new();
    let mut found = Vec::new();
    for (line, instruction) in instructions(text) {
        let mut words: Vec<&str> = instruction.split_whitespace().collect();
        // A trigger is checked as the instruction it will be.
        while words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("onbuild"))
        {
            words.remove(0);
        }
        let Some((keyword, words)) = words.split_first() else {
            continue;
        };
        let mut named = |reference: &str| -> Result<(), DockerfileError> {
            if stages.iter().any(|s| s.eq_ignore_ascii_case(reference))
                || reference.eq_ignore_ascii_case("scratch")
            {
                return Ok(());
            }
            plain(reference, line)?;
            found.push(ImageReference {
                line,
                reference: reference.to_owned(),
            });
            Ok(())
        };
        match keyword.to_ascii_lowercase().as_str() {
            "from" => {
                let mut rest = words.iter().filter(|w| !w.starts_with("--"));
                if let Some(image) = rest.next() {
                    named(image)?;
                }
                if let (Some(as_), Some(name)) = (rest.next(), rest.next()) {
                    if as_.eq_ignore_ascii_case("as") {
                        stages.push((*name).to_owned());
                    }
                }
            }
            _ => {
                for word in words.iter().take_while(|w| w.starts_with("--")) {
                    let lower = word.to_ascii_lowercase();
                    if lower.starts_with("--from=") {
                        let from = &word["--from=".len()..];
                        // A stage by number is no image.
                        if !from.bytes().all(|b| b.is_ascii_digit()) {
                            named(from)?;
                        }
                    } else if lower.starts_with("--mount=") {
                        for pair in word["--mount=".len()..].split(',') {
                            if let Some((key, value)) = pair.split_once('=') {
                                if key.trim().eq_ignore_ascii_case("from") {
                                    named(value)?;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Checks every image `text` names for a build of `tenant`: none of
/// another tenant's.
pub fn check(text: &str, tenant: &str) -> Result<(), DockerfileError> {
    for ImageReference { line, reference } in image_references(text)? {
        if !may_use(&reference, tenant) {
            return Err(DockerfileError::OtherTenant { line, reference });
        }
    }
    Ok(())
}

/// Whether a build of `tenant` may use the image named `reference`: any but
/// an app image of another tenant (or one of the older `berth-app-…`
/// names, which do not say the tenant).
pub fn may_use(reference: &str, tenant: &str) -> bool {
    let name = reference.to_ascii_lowercase();
    let mut name = name.as_str();
    for prefix in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        name = name.strip_prefix(prefix).unwrap_or(name);
    }
    name = name.strip_prefix("library/").unwrap_or(name);
    let app_image = name.starts_with(&format!("{APP_IMAGE_REGISTRY}/"))
        || name.starts_with("berth-app-")
        || name.starts_with("berth-app/");
    !app_image || name.starts_with(&format!("{APP_IMAGE_REGISTRY}/{tenant}/"))
}

/// A reference is a plain image name: the characters of Docker's reference
/// grammar only (no `$`, quotes or escapes, which Docker would expand or
/// strip), and no bare image ID or ID prefix.
fn plain(reference: &str, line: usize) -> Result<(), DockerfileError> {
    let grammar = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if reference.is_empty() || !reference.chars().all(grammar) {
        return Err(DockerfileError::NotPlain {
            line,
            reference: reference.to_owned(),
        });
    }
    let id = reference
        .strip_prefix("sha256:")
        .unwrap_or(reference)
        .to_ascii_lowercase();
    if id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DockerfileError::ImageId {
            line,
            reference: reference.to_owned(),
        });
    }
    Ok(())
}

/// The Dockerfile's instructions, continuation lines joined, comments and
/// blank lines left out, each with the line it starts on — as Docker reads
/// them: parser directives first (only `escape` changes anything), a
/// byte-order mark dropped, blank and comment lines inside a continuation
/// skipped.
fn instructions(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut escape = '\\';
    let mut directives = true;
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if directives {
            if let Some((key, value)) = line
                .strip_prefix('#')
                .and_then(|d| d.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                if key.eq_ignore_ascii_case("escape") {
                    if let Some(c @ ('\\' | '`')) = value.chars().next() {
                        escape = c;
                    }
                }
                continue;
            }
            directives = false;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (start, mut joined) = current.take().unwrap_or((index + 1, String::new()));
        match line.strip_suffix(escape) {
            Some(body) => {
                joined.push_str(body);
                joined.push(' ');
                current = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                out.push((start, joined));
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
            "FROM apps.berth.invalid/acme/shop:0123456789ab\n",
            "FROM --platform=linux/amd64 busybox\nCOPY --from=0 /a /b\n",
            "# syntax=docker/dockerfile:1\nFROM alpine\n",
        ] {
            assert_eq!(check(ok, "acme"), Ok(()), "{ok}");
        }
        assert_eq!(
            image_references("FROM alpine AS a\nFROM a\nCOPY --from=busybox:1 /x /y\n")
                .unwrap()
                .iter()
                .map(|r| r.reference.as_str())
                .collect::<Vec<_>>(),
            ["alpine", "busybox:1"]
        );
    }

    #[test]
    fn another_tenants_images_are_refused_however_named() {
        for (text, line) in [
            ("FROM apps.berth.invalid/globex/shop:abc\n", 1),
            ("FROM APPS.berth.invalid/globex/shop\n", 1),
            ("FROM apps.berth.invalid/acme-evil/x\n", 1),
            ("FROM berth-app-acme-shop:abc\n", 1),
            ("FROM docker.io/library/berth-app-globex-x:abc\n", 1),
            ("FROM alpine\nCOPY --from=apps.berth.invalid/globex/shop:abc /s /s\n", 2),
            ("FROM alpine\nRUN --mount=type=bind,from=apps.berth.invalid/globex/x,target=/m true\n", 2),
            ("FROM alpine\nRUN true\nFROM \\\n  apps.berth.invalid/globex/x\n", 3),
            // A blank line and a comment inside a continuation.
            ("FROM alpine\nCOPY \\\n\n# c\n --from=apps.berth.invalid/globex/x /a /b\n", 2),
            // A trigger, and a byte-order mark.
            ("FROM alpine\nONBUILD COPY --from=apps.berth.invalid/globex/x /a /b\n", 2),
            ("\u{feff}FROM apps.berth.invalid/globex/x\n", 1),
        ] {
            match refused(text) {
                DockerfileError::OtherTenant { line: l, .. } => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_docker_would_rewrite_and_image_ids_are_refused() {
        for text in [
            "ARG IMG=apps.berth.invalid/globex/x\nFROM ${IMG}\n",
            "FROM alpine\nCOPY --from=$SRC /a /b\n",
            "FROM \"apps.berth.invalid/globex/x\"\n",
            "FROM apps\\.berth.invalid/globex/x\n",
            "FROM alpine\nCOPY --from='x' /a /b\n",
        ] {
            assert!(
                matches!(refused(text), DockerfileError::NotPlain { .. }),
                "{text}"
            );
        }
        for text in [
            "FROM 3fa9\n",
            "FROM sha256:3fa9c0ffee\n",
            "FROM alpine\nCOPY --from=deadbeef /a /b\n",
        ] {
            assert!(
                matches!(refused(text), DockerfileError::ImageId { .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn only_the_escape_directive_changes_how_lines_continue() {
        let text =
            "# escape=`\nFROM alpine\nRUN echo `\n  hi\nFROM `\n  apps.berth.invalid/globex/x\n";
        assert!(matches!(
            refused(text),
            DockerfileError::OtherTenant { line: 5, .. }
        ));
        // An unknown directive leaves the backslash.
        let text = "# escapes=q\nFROM alpine\nFROM \\\n apps.berth.invalid/globex/x\n";
        assert!(matches!(
            refused(text),
            DockerfileError::OtherTenant { line: 3, .. }
        ));
    }
}
