//! Transport helpers shared by the two HTTP clients of the payload, the
//! component download ([`crate::components`]) and the registry client
//! ([`crate::registry`]): both tell an unreachable host (the one failure
//! `--kubernetes auto` builds without Kubernetes on) from every other
//! failure, and both report the whole cause chain. Their own module so
//! neither client imports the other.

/// Whether a transport error means "could not reach the host" (DNS
/// failure, refused or timed-out connection, request timeout).
pub fn is_unreachable(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout()
}

/// A transport error with its causes (DNS, refused, TLS), which reqwest's
/// Display leaves out.
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(&format!(": {s}"));
        source = s.source();
    }
    reason
}
