//! Rate limits and request-body stall protection.
//!
//! Rate limits use GCRA from the `governor` crate. A signed-in user's
//! requests count against that user (`user_requests_per_window`, high
//! enough for a batch of thousands of files), not against their address,
//! so one busy job neither slows itself down nor its office's other users.
//! Everything else is counted by client address: anonymous requests
//! (`api_requests_per_window`), the login endpoints apart
//! (`login_requests_per_window`, so a login flood cannot also spend an
//! address's budget), and requests carrying a bearer token before it is
//! checked (`bearer_requests_per_window`, which bounds the token look-ups
//! a flood of made-up tokens can cause). A refusal is 429 with
//! `Retry-After`. The limits are per server process (see docs/API.md).
//! Connection caps and timeouts live in [`super::serve`].

use std::future::Future as _;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::serve::ConnInfo;
use super::state::AppState;
use crate::config::Limits;
use crate::service::Error;

/// The per-address limiters of one server.
pub struct RateLimits {
    api: DefaultKeyedRateLimiter<IpAddr>,
    login: DefaultKeyedRateLimiter<IpAddr>,
    /// Requests with a bearer token, before it is checked, by address.
    bearer: DefaultKeyedRateLimiter<IpAddr>,
    /// Requests of signed-in users, by user name.
    user: DefaultKeyedRateLimiter<String>,
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
            bearer: DefaultKeyedRateLimiter::keyed(quota(
                limits.bearer_requests_per_window,
                limits.window_secs,
            )),
            user: DefaultKeyedRateLimiter::keyed(quota(
                limits.user_requests_per_window,
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
        self.bearer.retain_recent();
        self.user.retain_recent();
        self.request_uploads.retain_recent();
    }

    /// Whether `ip` may begin one more upload through an upload link now.
    pub fn allow_request_upload(&self, ip: IpAddr) -> bool {
        self.request_uploads.check_key(&address_key(ip)).is_ok()
    }

    /// Ok, or the time after which `ip` may try again.
    fn check(&self, ip: IpAddr, budget: AddressBudget) -> Result<(), Duration> {
        let limiter = match budget {
            AddressBudget::Login => &self.login,
            AddressBudget::Bearer => &self.bearer,
            AddressBudget::Anonymous => &self.api,
        };
        limiter.check_key(&address_key(ip)).map_err(wait_time)
    }

    /// Ok, or the refusal of one more request by signed-in `user` now.
    pub fn check_user(&self, user: &str) -> Result<(), Error> {
        self.user
            .check_key(&user.to_string())
            .map_err(wait_time)
            .map_err(|wait| {
                Error::rate_limited(format!("too many requests by {user}; slow down"), wait)
            })
    }
}

fn wait_time(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// Which per-address budget a request spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddressBudget {
    Login,
    Bearer,
    Anonymous,
}

impl AddressBudget {
    fn of(request: &Request) -> Self {
        let path = request.uri().path();
        if path == "/v1/auth/challenge" || path == "/v1/auth/login" {
            Self::Login
        } else if request
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "))
        {
            Self::Bearer
        } else {
            Self::Anonymous
        }
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

/// Middleware: refuses requests over the address's budget with 429.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/healthz" {
        return next.run(request).await;
    }
    let Some(ip) = request.extensions().get::<ConnInfo>().map(|c| c.peer.ip()) else {
        return next.run(request).await;
    };
    if let Err(wait) = state.rate_limits.check(ip, AddressBudget::of(&request)) {
        metrics::counter!("coffer_rate_limited_total").increment(1);
        crate::service::audit::refused(&state, ip, "rate_limit", path).await;
        return Error::rate_limited("too many requests; slow down", wait).into_response();
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
            assert!(rate.check(ip, AddressBudget::Anonymous).is_ok());
        }
        assert!(
            rate.check("2001:db8::ffff".parse().unwrap(), AddressBudget::Anonymous)
                .is_err()
        );
        assert!(
            rate.check("2001:db8:0:1::1".parse().unwrap(), AddressBudget::Anonymous)
                .is_ok()
        );
    }
}
