//! Compiler and checker output turned into diagnostics with line and
//! column: the formats of gcc/g++ and gofmt (`file:line:col: …`), tsc
//! (`file(line,col): error …`), javac (`file:line: error: …` and a caret
//! line), rustc (`error: …` then ` --> file:line:col`) and node --check
//! (`file:line`, the code, a caret line, `SyntaxError: …`).

/// One message about the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Errors and warnings found in `output`, in order.
pub fn parse(output: &str) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let lines: Vec<&str> = output.lines().collect();
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let mut pending_rust: Option<(bool, String)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        // rustc: the message first, its place on a later ` --> ` line.
        if let Some(rest) = line.trim_start().strip_prefix("--> ") {
            if let (Some((error, message)), Some((l, c))) = (pending_rust.take(), place(rest)) {
                let d = Diagnostic {
                    line: l,
                    column: c,
                    message,
                };
                if error {
                    errors.push(d)
                } else {
                    warnings.push(d)
                }
            }
            i += 1;
            continue;
        }
        if let Some((error, message)) = rust_head(line) {
            pending_rust = Some((error, message));
            i += 1;
            continue;
        }
        // tsc: file(line,col): error TS1234: message
        if let Some((l, c, kind, message)) = tsc(line) {
            let d = Diagnostic {
                line: l,
                column: c,
                message,
            };
            if kind == "warning" {
                warnings.push(d)
            } else {
                errors.push(d)
            }
            i += 1;
            continue;
        }
        let parts: Vec<&str> = line.splitn(4, ':').collect();
        let number = |s: &str| s.trim().parse::<u32>().ok();
        match parts.as_slice() {
            // gcc, g++, gofmt, the python checker: file:line:col: [kind:] message
            [file, l, c, rest] if is_file(file) && number(l).is_some() && number(c).is_some() => {
                let rest = rest.trim();
                let (kind, message) = match rest.split_once(": ") {
                    Some((k @ ("error" | "fatal error" | "warning" | "note"), m)) => {
                        (k, m.to_owned())
                    }
                    _ => ("error", rest.to_owned()),
                };
                let d = Diagnostic {
                    line: number(l).unwrap_or(0),
                    column: number(c).unwrap_or(0),
                    message,
                };
                match kind {
                    "warning" => warnings.push(d),
                    "note" => {}
                    _ => errors.push(d),
                }
            }
            // javac: file:line: error: message, then the code and a caret line
            [file, l, kind, message]
                if is_file(file)
                    && number(l).is_some()
                    && matches!(kind.trim(), "error" | "warning") =>
            {
                let column = caret(lines.get(i + 2).copied());
                let d = Diagnostic {
                    line: number(l).unwrap_or(0),
                    column,
                    message: message.trim().to_owned(),
                };
                if kind.trim() == "warning" {
                    warnings.push(d)
                } else {
                    errors.push(d)
                }
            }
            // node --check: file:line, the code, a caret line, blank, SyntaxError: message
            [file, l] if is_file(file) && number(l).is_some() => {
                let column = caret(lines.get(i + 2).copied());
                if let Some(message) = lines[i + 1..]
                    .iter()
                    .take(6)
                    .find(|m| m.contains("Error: "))
                {
                    errors.push(Diagnostic {
                        line: number(l).unwrap_or(0),
                        column,
                        message: message.trim().to_owned(),
                    });
                }
            }
            _ => {}
        }
        i += 1;
    }
    (errors, warnings)
}

fn is_file(text: &str) -> bool {
    let name = text.rsplit('/').next().unwrap_or(text);
    name.contains('.') && !name.contains(' ')
}

/// `file:line:col` → (line, col).
fn place(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().rsplitn(3, ':');
    let c = parts.next()?.parse().ok()?;
    let l = parts.next()?.parse().ok()?;
    Some((l, c))
}

/// rustc's `error[E0308]: message` / `warning: message` (not the summaries).
fn rust_head(line: &str) -> Option<(bool, String)> {
    let (error, rest) = if let Some(rest) = line.strip_prefix("error") {
        (true, rest)
    } else if let Some(rest) = line.strip_prefix("warning") {
        (false, rest)
    } else {
        return None;
    };
    let rest = match rest.strip_prefix('[') {
        Some(code) => code.split_once(']')?.1,
        None => rest,
    };
    let message = rest.strip_prefix(": ")?;
    if message.starts_with("aborting due to") || message.contains("emitted") {
        return None;
    }
    Some((error, message.to_owned()))
}

/// tsc's `file(line,col): error TS2322: message`.
fn tsc(line: &str) -> Option<(u32, u32, &str, String)> {
    let (head, rest) = line.split_once("): ")?;
    let (_, position) = head.rsplit_once('(')?;
    let (l, c) = position.split_once(',')?;
    let (kind, message) = rest.split_once(' ')?;
    if !matches!(kind, "error" | "warning") {
        return None;
    }
    Some((l.parse().ok()?, c.parse().ok()?, kind, message.to_owned()))
}

/// The 1-based column of the `^` in a caret line.
fn caret(line: Option<&str>) -> u32 {
    line.and_then(|l| l.find('^')).map_or(0, |i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(output: &str) -> Diagnostic {
        parse(output)
            .0
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no error in {output:?}"))
    }

    #[test]
    fn each_toolchain_format_gives_line_and_column() {
        let d =
            first("main.cpp:3:15: error: 'x' was not declared in this scope\n    3 | return x;\n");
        assert_eq!(
            (d.line, d.column, d.message.as_str()),
            (3, 15, "'x' was not declared in this scope")
        );
        let d = first(
            "main.ts(1,7): error TS2322: Type 'string' is not assignable to type 'number'.\n",
        );
        assert_eq!((d.line, d.column), (1, 7));
        assert!(d.message.starts_with("TS2322"));
        let d = first("Main.java:1: error: ';' expected\npublic class Main { void f() { int x = \"a\" } }\n                                          ^\n1 error\n");
        assert_eq!(
            (d.line, d.column, d.message.as_str()),
            (1, 43, "';' expected")
        );
        let d = first("error[E0308]: mismatched types\n --> main.rs:1:26\n  |\nerror: aborting due to previous error\n");
        assert_eq!(
            (d.line, d.column, d.message.as_str()),
            (1, 26, "mismatched types")
        );
        let d = first("/work/main.js:1\nlet x = ;\n        ^\n\nSyntaxError: Unexpected token ';'\n    at wrapSafe\n");
        assert_eq!(
            (d.line, d.column, d.message.as_str()),
            (1, 9, "SyntaxError: Unexpected token ';'")
        );
        let d = first("main.go:2:14: expected '(', found x\n");
        assert_eq!(
            (d.line, d.column, d.message.as_str()),
            (2, 14, "expected '(', found x")
        );
        let d = first("main.py:1:7: error: invalid syntax\n");
        assert_eq!((d.line, d.column), (1, 7));
        let (errors, warnings) =
            parse("main.cpp:2:9: warning: unused variable 'y' [-Wunused-variable]\n");
        assert!(errors.is_empty());
        assert_eq!(warnings[0].line, 2);
    }
}
