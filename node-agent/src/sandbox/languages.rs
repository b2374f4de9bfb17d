//! The languages the sandbox runs, on toolchains from Debian's packages.

/// How one language is compiled (when it is) and run, inside `/work`.
#[derive(Debug)]
pub struct Language {
    pub name: &'static str,
    /// The code's file name in `/work`.
    pub file: &'static str,
    /// The compile command, for compiled languages.
    pub compile: Option<&'static [&'static str]>,
    /// What the compile step leaves behind to run (cached by code hash).
    pub artifacts: &'static [&'static str],
    pub run: &'static [&'static str],
    /// Prints the toolchain's version.
    pub version: &'static [&'static str],
    /// The toolchain binary whose presence makes the language available.
    pub toolchain: &'static str,
    /// Checks the code without running it (syntax, and types where the
    /// compiler checks them), printing diagnostics as the compiler does.
    pub check: &'static [&'static str],
    /// Extra environment, on top of the sandbox's allow-list.
    pub env: &'static [(&'static str, &'static str)],
}

pub const LANGUAGES: &[Language] = &[
    Language {
        name: "python",
        file: "main.py",
        compile: None,
        artifacts: &[],
        // -I: no user site, no PYTHON* variables; -B: no .pyc writes.
        run: &["/usr/bin/python3", "-I", "-B", "main.py"],
        version: &["/usr/bin/python3", "--version"],
        toolchain: "/usr/bin/python3",
        check: &["/usr/bin/python3", "-I", "-B", "-c", "import sys\ntry:\n    compile(open('main.py').read(), 'main.py', 'exec')\nexcept SyntaxError as e:\n    print(f'main.py:{e.lineno}:{e.offset or 0}: error: {e.msg}', file=sys.stderr)\n    sys.exit(1)"],
        env: &[],
    },
    Language {
        name: "javascript",
        file: "main.js",
        compile: None,
        artifacts: &[],
        run: &["/usr/bin/node", "main.js"],
        version: &["/usr/bin/node", "--version"],
        toolchain: "/usr/bin/node",
        check: &["/usr/bin/node", "--check", "main.js"],
        env: &[],
    },
    Language {
        name: "typescript",
        file: "main.ts",
        compile: Some(&[
            "/usr/bin/tsc",
            "--pretty",
            "false",
            "--target",
            "es2020",
            "--module",
            "commonjs",
            "--strict",
            "main.ts",
        ]),
        artifacts: &["main.js"],
        run: &["/usr/bin/node", "main.js"],
        version: &["/usr/bin/tsc", "--version"],
        toolchain: "/usr/bin/tsc",
        check: &["/usr/bin/tsc", "--pretty", "false", "--noEmit", "--target", "es2020", "--strict", "main.ts"],
        env: &[],
    },
    Language {
        name: "cpp",
        file: "main.cpp",
        compile: Some(&[
            "/usr/bin/g++",
            "-O2",
            "-std=c++17",
            "-pipe",
            "-o",
            "main",
            "main.cpp",
        ]),
        artifacts: &["main"],
        run: &["/work/main"],
        version: &["/usr/bin/g++", "--version"],
        toolchain: "/usr/bin/g++",
        check: &["/usr/bin/g++", "-fsyntax-only", "-std=c++17", "-Wall", "main.cpp"],
        env: &[],
    },
    Language {
        name: "java",
        file: "Main.java",
        compile: Some(&[
            "/usr/bin/javac",
            "-J-Xss4m",
            "-J-XX:+UseSerialGC",
            "-J-Xshare:off",
            "Main.java",
        ]),
        artifacts: &["Main.class"],
        run: &[
            "/usr/bin/java",
            "-XX:+UseSerialGC",
            "-Xshare:off",
            "-XX:TieredStopAtLevel=1",
            "Main",
        ],
        version: &["/usr/bin/java", "-version"],
        toolchain: "/usr/bin/javac",
        check: &["/usr/bin/javac", "-J-XX:+UseSerialGC", "-J-Xshare:off", "-d", "/tmp", "Main.java"],
        env: &[],
    },
    Language {
        name: "go",
        file: "main.go",
        compile: Some(&["/usr/bin/go", "build", "-o", "main", "main.go"]),
        artifacts: &["main"],
        run: &["/work/main"],
        version: &["/usr/bin/go", "version"],
        toolchain: "/usr/bin/go",
        check: &["/usr/bin/gofmt", "-e", "-l", "main.go"],
        env: &[
            ("GOCACHE", "/work/.gocache"),
            ("GOPATH", "/work/.gopath"),
            ("GO111MODULE", "off"),
            ("CGO_ENABLED", "0"),
        ],
    },
    Language {
        name: "rust",
        file: "main.rs",
        compile: Some(&[
            "/usr/bin/rustc",
            "-O",
            "--edition",
            "2021",
            "-o",
            "main",
            "main.rs",
        ]),
        artifacts: &["main"],
        run: &["/work/main"],
        version: &["/usr/bin/rustc", "--version"],
        toolchain: "/usr/bin/rustc",
        check: &["/usr/bin/rustc", "--edition", "2021", "--emit=metadata", "-o", "/tmp/check", "main.rs"],
        env: &[],
    },
];

pub fn find(name: &str) -> Option<&'static Language> {
    let name = berth_proto::domain::Language::from_alias(name)?;
    LANGUAGES.iter().find(|l| l.name == name.as_str())
}
