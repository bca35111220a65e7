//! Waiting for a condition instead of sleeping a fixed time: `eventually` polls a check every
//! `POLL` until it holds, and panics with what it waited for (and the check's last answer) when
//! the time is up.
//!
//! A check answers with a `bool`, an `Option` (`Some(value)`: done) or a `Result` (`Ok(value)`:
//! done, `Err(why)`: not yet, `why` shown on timeout).

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a check runs.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// What a check answers.
pub(crate) trait Outcome {
    type Value;
    fn done(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

fn timed_out(within: Duration, what: &str, last: &str) -> ! {
    panic!("timed out after {within:?} waiting for {what}; last answer: {last}")
}

/// Runs `check` every `POLL` until it is done (then returns its value) or `within` has passed
/// (then returns its last answer as the error). For waits that must not panic (`Drop`).
pub(crate) fn poll<R: Outcome>(
    within: Duration,
    mut check: impl FnMut() -> R,
) -> Result<R::Value, String> {
    let until = Instant::now() + within;
    loop {
        match check().done() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= until => return Err(last),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Runs `check` every `POLL` until it is done and returns its value; panics after `within`
/// naming `what`. Blocks the thread: in async tests use `eventually_async`.
#[track_caller]
pub(crate) fn eventually<R: Outcome>(
    within: Duration,
    what: &str,
    check: impl FnMut() -> R,
) -> R::Value {
    poll(within, check).unwrap_or_else(|last| timed_out(within, what, &last))
}

/// `eventually` for async tests: the check may await, and the waits between checks yield.
pub(crate) async fn eventually_async<R: Outcome>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> R,
) -> R::Value {
    let until = Instant::now() + within;
    loop {
        match check().await.done() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= until => timed_out(within, what, &last),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
