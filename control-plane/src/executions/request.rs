//! The limits an execution request is checked against, and the state an
//! agent's result ends a run in.

use super::{
    DEFAULT_TIMEOUT_MS, MAX_CODE_BYTES, MAX_MEMORY_BYTES, MAX_STDIN_BYTES, MAX_TIMEOUT_MS,
    MIN_MEMORY_BYTES,
};
use berth_proto::{
    domain::{ExecutionState, Language},
    pb,
};

/// A request that breaks a limit: the message says which and its value.
pub fn check(request: &pb::ExecuteRequest) -> Result<(Language, u32, u64), String> {
    let language = pb::Language::try_from(request.language)
        .ok()
        .and_then(|l| Language::try_from(l).ok())
        .ok_or_else(|| {
            format!(
                "language: unknown (enum value {}); one of {}",
                request.language,
                Language::names()
            )
        })?;
    if request.code.len() > MAX_CODE_BYTES {
        return Err(format!(
            "code: {} bytes is over the limit of {MAX_CODE_BYTES} bytes",
            request.code.len()
        ));
    }
    let timeout_ms = match request.timeout_ms {
        0 => DEFAULT_TIMEOUT_MS,
        t if t > MAX_TIMEOUT_MS => {
            return Err(format!(
                "timeout: {t} ms is over the limit of {MAX_TIMEOUT_MS} ms"
            ))
        }
        t => t,
    };
    let memory = match request.memory_bytes {
        0 => language.default_memory_bytes(),
        m if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&m) => {
            return Err(format!(
            "memory: {m} bytes is outside the limits {MIN_MEMORY_BYTES}..{MAX_MEMORY_BYTES} bytes"
        ))
        }
        m => m,
    };
    if request.stdin.len() > MAX_STDIN_BYTES {
        return Err(format!(
            "stdin: {} bytes is over the limit of {MAX_STDIN_BYTES} bytes",
            request.stdin.len()
        ));
    }
    Ok((language, timeout_ms, memory))
}

pub fn state_of(result: &pb::ExecutionResult) -> ExecutionState {
    match pb::ExecutionState::try_from(result.state)
        .ok()
        .and_then(|s| ExecutionState::try_from(s).ok())
    {
        Some(ExecutionState::Queued | ExecutionState::Running) | None => ExecutionState::Failed,
        Some(state) => state,
    }
}
