//! The one HTTP(S) health check: a GET whose outcome feeds a fall/rise
//! counter ([`crate::verdict`]). Used by the VIP's tracker and by the API
//! balancer's backend checks.

use crate::verdict::Outcome;

/// One check of `url`: its outcome, and why when it did not pass. A
/// timeout is [`Outcome::Slow`]; anything else that is not a pass
/// (refused, TLS failure, error status, wrong body) is [`Outcome::Fail`].
pub async fn probe(
    client: &reqwest::Client,
    url: &str,
    expect_body: Option<&str>,
) -> (Outcome, Option<String>) {
    let transport = |e: reqwest::Error| {
        let outcome = if e.is_timeout() {
            Outcome::Slow
        } else {
            Outcome::Fail
        };
        // The chain names the cause (refused, certificate unknown, ...).
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        (outcome, Some(why))
    };
    let resp = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    let status = resp.status();
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) => return transport(e),
    };
    if !status.is_success() {
        return (Outcome::Fail, Some(format!("HTTP {status}")));
    }
    match expect_body {
        Some(want) if !body.contains(want) => (
            Outcome::Fail,
            Some(format!("body does not contain {want:?}")),
        ),
        _ => (Outcome::Pass, None),
    }
}
