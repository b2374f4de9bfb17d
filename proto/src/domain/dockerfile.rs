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
    #[error(
        "Dockerfile line {line}: {what}; write it plainly so it reads the same to Berth and Docker"
    )]
    Ambiguous { line: usize, what: String },
    #[error("the Dockerfile is over {MAX_DOCKERFILE_BYTES} bytes")]
    TooLarge,
}

/// An image a Dockerfile names, and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub line: usize,
    pub reference: String,
    /// Named by `FROM`: the build's parent, whose `ONBUILD` triggers run.
    pub parent: bool,
}

/// Every image `text` names (build stages named in it left out), each
/// checked to be a plain name and no image ID. Where Docker's reading of
/// a construct is in doubt (an escaped or quoted flag, a line that ends in
/// two escape characters, control characters, a late `escape` directive,
/// `--platform`), the Dockerfile is refused rather than guessed at.
pub fn image_references(text: &str) -> Result<Vec<ImageReference>, DockerfileError> {
    if text.len() > MAX_DOCKERFILE_BYTES {
        return Err(DockerfileError::TooLarge);
    }
    // Stages finished so far (a stage's name counts from the next `FROM`
    // on, as in Docker), and the name of the one being read.
    let mut stages: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut started = 0usize;
    let mut found = Vec::new();
    let (escape, lines) = instructions(text)?;
    for (line, instruction) in lines {
        let ambiguous = |what: &str| DockerfileError::Ambiguous {
            line,
            what: what.to_owned(),
        };
        let mut words: Vec<&str> = instruction.split_ascii_whitespace().collect();
        // Docker reads quotes and escapes inside words: an instruction name
        // written with them, or (where images are named) a word that reads
        // as a flag only after them, is refused.
        let bare = |word: &str| -> String {
            word.chars()
                .filter(|c| *c != '"' && *c != '\'' && *c != escape)
                .collect()
        };
        while let Some(first) = words.first() {
            if bare(first).len() != first.len() {
                return Err(ambiguous(&format!("{first:?} is quoted or escaped")));
            }
            // A trigger is checked as the instruction it will be.
            if !first.eq_ignore_ascii_case("onbuild") {
                break;
            }
            words.remove(0);
        }
        let Some((keyword, words)) = words.split_first() else {
            continue;
        };
        let names_images = ["from", "copy", "add"]
            .iter()
            .any(|k| keyword.eq_ignore_ascii_case(k));
        if names_images {
            for word in words {
                let plain_word = bare(word);
                if plain_word.len() != word.len() && plain_word.starts_with('-') {
                    return Err(ambiguous(&format!("{word:?} is quoted or escaped")));
                }
            }
        }
        let is_stage =
            |name: &str, stages: &[String]| stages.iter().any(|s| s.eq_ignore_ascii_case(name));
        let parent = keyword.eq_ignore_ascii_case("from");
        let mut named = |reference: &str, stages: &[String]| -> Result<(), DockerfileError> {
            if is_stage(reference, stages) || reference.eq_ignore_ascii_case("scratch") {
                return Ok(());
            }
            plain(reference, line)?;
            found.push(ImageReference {
                line,
                reference: reference.to_owned(),
                parent,
            });
            Ok(())
        };
        if keyword.eq_ignore_ascii_case("from") {
            if words
                .iter()
                .any(|w| w.to_ascii_lowercase().starts_with("--platform"))
            {
                return Err(ambiguous("FROM --platform is not supported here"));
            }
            if let Some(done) = current.take() {
                stages.push(done);
            }
            started += 1;
            let mut rest = words.iter().filter(|w| !w.starts_with("--"));
            if let Some(image) = rest.next() {
                named(image, &stages)?;
            }
            if let (Some(as_), Some(name)) = (rest.next(), rest.next()) {
                if as_.eq_ignore_ascii_case("as") {
                    plain(name, line)?;
                    current = Some((*name).to_owned());
                }
            }
            continue;
        }
        for word in words.iter().take_while(|w| w.starts_with("--")) {
            let lower = word.to_ascii_lowercase();
            if let Some(from) = lower.strip_prefix("--from=") {
                let from = &word[word.len() - from.len()..];
                match from.parse::<usize>() {
                    // A finished stage by number.
                    Ok(n) if n + 1 < started => {}
                    _ => named(from, &stages)?,
                }
            } else if lower.starts_with("--mount=") {
                for pair in word["--mount=".len()..].split(',') {
                    if let Some((key, value)) = pair.split_once('=') {
                        if key.trim().eq_ignore_ascii_case("from") {
                            named(value, &stages)?;
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
    for ImageReference {
        line, reference, ..
    } in image_references(text)?
    {
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
/// blank lines left out, each with the line it starts on, and the escape
/// character — as Docker reads them: an `escape` directive on the first
/// line, a byte-order mark dropped, a continued line joined to the next
/// as it is (no space put in), blank and comment lines inside a
/// continuation skipped.
fn instructions(text: &str) -> Result<(char, Vec<(usize, String)>), DockerfileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let ambiguous = |what: &str| DockerfileError::Ambiguous {
            line: number,
            what: what.to_owned(),
        };
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ambiguous("a control character"));
        }
        let line = raw.trim_matches([' ', '\t']);
        if let Some(value) = escape_directive(line) {
            if index > 0 {
                return Err(ambiguous("an escape directive not on the first line"));
            }
            escape = match value {
                c @ ('\\' | '`') => c,
                _ => return Err(ambiguous("an escape directive other than \\ or `")),
            };
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = raw.trim_end_matches([' ', '\t']);
        let continued = end.ends_with(escape);
        if continued && end[..end.len() - escape.len_utf8()].ends_with(escape) {
            return Err(ambiguous("a line that ends in two escape characters"));
        }
        let (start, mut joined) = current.take().unwrap_or((number, String::new()));
        // The first line of an instruction loses its leading blanks; a
        // continuation keeps them.
        let piece = if joined.is_empty() { line } else { raw };
        if continued {
            let piece = piece.trim_end_matches([' ', '\t']);
            joined.push_str(&piece[..piece.len() - escape.len_utf8()]);
            current = Some((start, joined));
        } else {
            joined.push_str(piece);
            out.push((start, joined));
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    Ok((escape, out))
}

/// The character of an `escape` parser directive, `# escape=X`.
fn escape_directive(line: &str) -> Option<char> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let rest = rest
        .get(..6)
        .filter(|k| k.eq_ignore_ascii_case("escape"))
        .map(|_| &rest[6..])?;
    let value = rest.trim_start_matches([' ', '\t']).strip_prefix('=')?;
    value.trim_start_matches([' ', '\t']).chars().next()
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
            "FROM berth/python:3.11-bookworm\nRUN echo hi \\\n  && echo \"--there\"\n",
            "FROM debian:bookworm AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /out\n",
            "FROM apps.berth.invalid/acme/shop:0123456789ab\n",
            "FROM busybox\nCOPY --from=busybox:1 /a /b\nFROM alpine\nCOPY --from=0 /a /b\n",
            "# escape=`\nFROM alpine\nRUN echo `\n  hi\n",
            "# syntax=docker/dockerfile:1\nFROM alpine\n",
            "FROM alpine\r\nCOPY [\"a b\", \"/c\"]\r\n",
        ] {
            assert_eq!(check(ok, "acme"), Ok(()), "{ok}");
        }
        assert_eq!(
            image_references("FROM alpine AS base\nFROM base\nCOPY --from=busybox:1 /x /y\n")
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
            ("FROM apps.berth.invalid/globex/x@sha256:0123\n", 1),
            ("FROM berth-app-acme-shop:abc\n", 1),
            ("FROM docker.io/library/berth-app-globex-x:abc\n", 1),
            ("FROM alpine\nCOPY --from=apps.berth.invalid/globex/shop:abc /s /s\n", 2),
            ("FROM alpine\nRUN true\nFROM \\\n  apps.berth.invalid/globex/x\n", 3),
            // Blank and comment lines inside a continuation.
            ("FROM alpine\nCOPY \\\n\n# c\n --from=apps.berth.invalid/globex/x /a /b\n", 2),
            // A continuation joined as it is: `--fr` and `om=…` make one flag.
            ("FROM alpine\nCOPY --fr\\\nom=apps.berth.invalid/globex/x /a /b\n", 2),
            // A trigger, and a byte-order mark.
            ("FROM alpine\nONBUILD COPY --from=apps.berth.invalid/globex/x /a /b\n", 2),
            ("\u{feff}FROM apps.berth.invalid/globex/x\n", 1),
            // A stage's name counts only once its stage is over.
            ("FROM alpine AS apps.berth.invalid/globex/x\nCOPY --from=apps.berth.invalid/globex/x /a /b\n", 2),
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
            // A stage number past the stages so far is an image ID.
            "FROM alpine\nCOPY --from=7 /a /b\n",
            // A stage may not be named like an image ID.
            "FROM alpine AS deadbeef\nFROM scratch\nCOPY --from=deadbeef /a /b\n",
        ] {
            assert!(
                matches!(refused(text), DockerfileError::ImageId { .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn what_docker_might_read_otherwise_is_refused() {
        for (text, line) in [
            (
                "FROM alpine\nCOPY --fr\\om=apps.berth.invalid/globex/x /a /b\n",
                2,
            ),
            ("FROM alpine\nCOPY \"--from\"=x /a /b\n", 2),
            ("FROM alpine\nCOPY \\--from=x /a /b\n", 2),
            ("FROM alpine\nC\\OPY --from=x /a /b\n", 2),
            ("FROM alpine\nRUN echo \\\\\nCOPY --from=x /a /b\n", 2),
            ("FROM alpine\nRUN echo \\\u{c}\nCOPY /a /b\n", 2),
            ("FROM --platform=linux/arm64 alpine\n", 1),
            ("# syntax=docker/dockerfile:1\n# escape=`\nFROM alpine\n", 2),
        ] {
            match refused(text) {
                DockerfileError::Ambiguous { line: l, .. } => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
