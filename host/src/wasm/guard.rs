//! Guest calls under a deadline, and what to say when one fails.

use std::future::Future;
use std::time::Duration;

/// Runs a guest call under `deadline`. Guests yield at every epoch tick, so
/// the timer fires even for a guest in an endless loop; dropping the call
/// abandons the instance, which is never used again.
pub async fn guarded<T>(
    deadline: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(describe_trap(&error)),
        Err(_) => Err(format!("ran past its deadline of {deadline:?}")),
    }
}

/// One line saying why a guest call failed, without the wasm backtrace.
pub fn describe_trap(error: &wasmtime::Error) -> String {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return format!("trapped: {trap}");
    }
    let message = format!("{error:#}");
    if message.contains("forcing trap when growing memory") {
        return "exceeded its memory cap".to_string();
    }
    message
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_string()
}
