//! The one way an error and its causes become text: `error: cause: cause`, on one line unless a
//! cause's own text has line breaks (a tool's stderr). Used for gRPC statuses, Vault client and
//! Kubernetes API errors alike, so every message reads the same.

use std::error::Error;

/// `err: cause: cause`, each cause once: a cause whose text the message already holds (an
/// error that prints its source itself) is not repeated.
pub(crate) fn chain(err: &dyn Error) -> String {
    chain_after(err.to_string(), err.source())
}

/// `head: cause: cause` for the causes from `source` on: for an error whose own text must not
/// be shown (e.g. one that prints a URL) but whose causes may.
pub(crate) fn chain_after(head: String, mut source: Option<&dyn Error>) -> String {
    let mut msg = head;
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner: {0}")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn causes_once_each() {
        let e = Outer(Inner(std::io::Error::other("disk")));
        // `Inner` prints its source itself: the io error is not repeated.
        assert_eq!(chain(&e), "outer: inner: disk");
        assert_eq!(chain_after("head".into(), e.source()), "head: inner: disk");
    }
}
