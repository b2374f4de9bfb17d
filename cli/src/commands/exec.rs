//! `berth exec`: run code in a node's sandbox and print what it printed.

use crate::{
    client::{reply, Target},
    output::Format,
};
use berth_proto::{
    domain::{ExecutionState, Language},
    pb::{self, execution_service_client::ExecutionServiceClient},
};
use clap::{Args, Subcommand};
use std::{io::Write, path::PathBuf, time::Duration};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExecArgs {
    #[command(subcommand)]
    command: Option<ExecCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// python, javascript, typescript, java, cpp, go or rust.
    #[arg(long = "lang")]
    language: Option<String>,
    /// The code to run.
    file: Option<PathBuf>,
    /// A file given to the program as its stdin.
    #[arg(long)]
    stdin: Option<PathBuf>,
    /// Wall-clock and CPU limit [default: 30s, at most 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Memory limit: `128Mi`, `1Gi` or bytes [default: 128Mi].
    #[arg(long)]
    memory: Option<String>,
    /// `json` prints the whole execution record instead of its output.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Subcommand)]
enum ExecCommand {
    /// Languages the cluster runs, their versions and the limits.
    Info,
    /// Check code without running it: errors and warnings with line and column.
    Validate {
        #[arg(long = "lang")]
        language: String,
        file: PathBuf,
    },
}

fn language(name: &str) -> anyhow::Result<i32> {
    let language = Language::from_alias(name)
        .ok_or_else(|| anyhow::anyhow!("--lang {name:?}: one of {}", Language::names()))?;
    Ok(pb::Language::from(language) as i32)
}

/// The exit code `berth exec` ends with for `execution`.
fn exit_code(execution: &pb::Execution) -> i32 {
    let state = pb::ExecutionState::try_from(execution.state)
        .ok()
        .and_then(|s| ExecutionState::try_from(s).ok());
    match state {
        Some(ExecutionState::Succeeded) => 0,
        Some(ExecutionState::Failed) if execution.signal != 0 => 128 + execution.signal,
        Some(ExecutionState::Failed) if execution.exit_code != 0 => execution.exit_code,
        Some(ExecutionState::Timeout) => 124,
        Some(ExecutionState::MemoryExceeded) => 137,
        Some(ExecutionState::Rejected) => 2,
        _ => 1,
    }
}

pub async fn run(target: &Target, args: ExecArgs) -> anyhow::Result<()> {
    let mut client = ExecutionServiceClient::new(target.connect().await?);
    if let Some(ExecCommand::Info) = args.command {
        let info = reply(
            client
                .get_execution_info(pb::GetExecutionInfoRequest {})
                .await,
        )?;
        for l in &info.languages {
            let name = pb::Language::try_from(l.language)
                .ok()
                .and_then(|x| Language::try_from(x).ok())
                .map_or("unknown".to_owned(), |x| x.to_string());
            println!("{name:<12} {}", l.version);
        }
        println!(
            "limits: timeout {} s (at most {} s), memory {} MiB (at most {} MiB), code {} KiB",
            info.default_timeout_ms / 1000,
            info.max_timeout_ms / 1000,
            info.default_memory_bytes >> 20,
            info.max_memory_bytes >> 20,
            info.max_code_bytes / 1024
        );
        return Ok(());
    }
    if let Some(ExecCommand::Validate {
        language: lang,
        file,
    }) = args.command
    {
        let code = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
        let checked = reply(
            client
                .validate_code(pb::ValidateCodeRequest {
                    language: language(&lang)?,
                    code,
                })
                .await,
        )?;
        for (kind, list) in [("error", &checked.errors), ("warning", &checked.warnings)] {
            for d in list {
                println!(
                    "{}:{}:{}: {kind}: {}",
                    file.display(),
                    d.line,
                    d.column,
                    d.message
                );
            }
        }
        if !checked.valid {
            std::process::exit(1);
        }
        println!("{}: valid", file.display());
        return Ok(());
    }
    let run = args.run;
    let (Some(lang), Some(file)) = (run.language, run.file) else {
        anyhow::bail!("usage: berth exec --lang LANGUAGE FILE [--stdin FILE] [--timeout 10s] [--memory 128Mi]");
    };
    let code = std::fs::read_to_string(&file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let stdin = match &run.stdin {
        Some(path) => {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let memory_bytes = match run.memory.as_deref() {
        Some(text) => crate::commands::apps::parse_size("--memory", text)?,
        None => 0,
    };
    let request = pb::ExecuteRequest {
        tenant: String::new(),
        language: language(&lang)?,
        code,
        stdin,
        timeout_ms: run
            .timeout
            .map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
        memory_bytes,
    };
    let execution = reply(client.execute(request).await)?;
    match run.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&berth_proto::views::ExecutionView::from(&execution))?
        ),
        Format::Table => {
            std::io::stdout().write_all(&execution.stdout)?;
            std::io::stderr().write_all(&execution.stderr)?;
            if !execution.error.is_empty() {
                eprintln!("berth exec: {}", execution.error);
            }
        }
    }
    std::io::stdout().flush()?;
    let code = exit_code(&execution);
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
