//! Per-address rate limits and request-body stall protection.
//!
//! Rate limits use GCRA from the `governor` crate, keyed by client address:
//! `api_requests_per_window` per `window_secs` for every request, and a
//! separate budget for the login endpoints so a login flood cannot also
//! spend an address's API budget (nor the other way round). A refusal is
//! 429 with `Retry-After`. The limits are per server process (see
//! docs/API.md). Connection caps and timeouts live in [`super::serve`].

use std::future::Future as _;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::serve::ConnInfo;
use super::state::AppState;
use crate::config::Limits;
use crate::service::{Error, Kind};

/// The per-address limiters of one server.
pub struct RateLimits {
    api: DefaultKeyedRateLimiter<IpAddr>,
    login: DefaultKeyedRateLimiter<IpAddr>,
    /// Uploads begun through upload links, by anonymous senders.
    request_uploads: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(per_window: u32, window_secs: u64) -> Quota {
    let burst = NonZeroU32::new(per_window).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(window_secs.max(1)) / burst.get();
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

impl RateLimits {
    /// Limiters for `limits`.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            api: DefaultKeyedRateLimiter::keyed(quota(
                limits.api_requests_per_window,
                limits.window_secs,
            )),
            login: DefaultKeyedRateLimiter::keyed(quota(
                limits.login_requests_per_window,
                limits.window_secs,
            )),
            request_uploads: DefaultKeyedRateLimiter::keyed(quota(
                limits.request_uploads_per_window,
                limits.window_secs,
            )),
        })
    }

    /// Forgets addresses whose budget is full again (bounds memory).
    pub fn forget_idle(&self) {
        self.api.retain_recent();
        self.login.retain_recent();
        self.request_uploads.retain_recent();
    }

    /// Whether `ip` may begin one more upload through an upload link now.
    pub fn allow_request_upload(&self, ip: IpAddr) -> bool {
        self.request_uploads.check_key(&address_key(ip)).is_ok()
    }

    /// Ok, or the time after which `ip` may try again.
    fn check(&self, ip: IpAddr, login: bool) -> Result<(), Duration> {
        let limiter = if login { &self.login } else { &self.api };
        limiter
            .check_key(&address_key(ip))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// What per-address limits count: an IPv4 address as is (also when it
/// arrives as `::ffff:a.b.c.d`), an IPv6 address by its /64, the smallest
/// block a site is given, so one client cannot take 2^64 budgets.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

fn is_login(path: &str) -> bool {
    path == "/v1/auth/challenge" || path == "/v1/auth/login"
}

/// Middleware: refuses requests over the address's budget with 429.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/healthz" {
        return next.run(request).await;
    }
    let Some(ip) = request.extensions().get::<ConnInfo>().map(|c| c.peer.ip()) else {
        return next.run(request).await;
    };
    if let Err(wait) = state.rate_limits.check(ip, is_login(path)) {
        metrics::counter!("coffer_rate_limited_total").increment(1);
        crate::service::audit::refused(&state, ip, "rate_limit", path).await;
        let mut response = Error::new(
            Kind::TooMany,
            "rate_limited",
            "too many requests; slow down",
        )
        .into_response();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return response;
    }
    next.run(request).await
}

/// Middleware: a request body that delivers no bytes for `body_stall_secs`
/// fails (the handler sees an I/O error and rolls back), so a client cannot
/// hold a request open by stalling its body.
pub async fn body_stall(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let stall = Duration::from_secs(state.config.limits.body_stall_secs.max(1));
    let request = request.map(|body| {
        Body::from_stream(StallGuard {
            inner: body.into_data_stream(),
            stall,
            timer: None,
        })
    });
    next.run(request).await
}

struct StallGuard<S> {
    inner: S,
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled")]
pub struct BodyStalled;

impl<S> Stream for StallGuard<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = this.inner.poll_next_unpin(cx) {
            this.timer = None;
            return Poll::Ready(item);
        }
        let stall = this.stall;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timer = None;
                Poll::Ready(Some(Err(axum::Error::new(BodyStalled))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> String {
        address_key(text.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn addresses_of_one_64_share_one_budget() {
        let limits = Limits {
            api_requests_per_window: 3,
            ..Limits::default()
        };
        let rate = RateLimits::new(&limits);
        for host in 1..=3 {
            let ip = format!("2001:db8::{host}").parse().unwrap();
            assert!(rate.check(ip, false).is_ok());
        }
        assert!(
            rate.check("2001:db8::ffff".parse().unwrap(), false)
                .is_err()
        );
        assert!(
            rate.check("2001:db8:0:1::1".parse().unwrap(), false)
                .is_ok()
        );
    }
}
