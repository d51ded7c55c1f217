//! What every handler shares: the file service and the HTTP layer's own
//! state (the rate limiters).

use std::sync::Arc;

use crate::service::Service;

/// Shared state of all handlers. Derefs to the [`Service`].
#[derive(Clone)]
pub struct AppState {
    /// The file service.
    pub service: Service,
    /// Per-address rate limiters.
    pub rate_limits: Arc<super::limits::RateLimits>,
}

impl AppState {
    /// State for `service`, with limiters from its configuration.
    pub fn new(service: Service) -> Self {
        Self {
            rate_limits: super::limits::RateLimits::new(&service.config.limits),
            service,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Service;

    fn deref(&self) -> &Service {
        &self.service
    }
}
