//! Which requests may call plugins now. A command or a query waits for a place (one of a few
//! per plugin, and one of a few in all) for a bounded time; one that finds none in time is
//! refused as [`Busy`] (503 with `Retry-After` over HTTP) without having run, rather than
//! running late. Waiting here costs a task, not a thread, so a crowd of slow clients queues
//! without taking the threads that serve everyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The bounds on requests calling plugins.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Requests calling one plugin at once.
    pub per_plugin: usize,
    /// Requests calling any plugin at once.
    pub total: usize,
    /// The longest a request waits for its place.
    pub queue_wait: Duration,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        AdmissionLimits {
            per_plugin: 2 * cores,
            total: 4 * cores,
            queue_wait: Duration::from_secs(1),
        }
    }
}

/// The places of requests calling plugins.
pub struct Admission {
    limits: AdmissionLimits,
    total: Arc<Semaphore>,
    per_plugin: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A request's place, given back when dropped.
pub struct Admitted {
    _plugin: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// No place came free in time: the request did nothing and may be sent again.
#[derive(Debug, thiserror::Error)]
#[error(
    "plugin {plugin} is busy: no call could start within {} ms ({per_plugin} may run for it, {total} for all plugins); try again shortly",
    .waited.as_millis()
)]
pub struct Busy {
    pub plugin: String,
    pub waited: Duration,
    pub per_plugin: usize,
    pub total: usize,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            total: Arc::new(Semaphore::new(limits.total.max(1))),
            per_plugin: Mutex::new(HashMap::new()),
        }
    }

    /// Waits (a bounded time) for a place to call plugin `plugin`.
    pub async fn admit(&self, plugin: &str) -> Result<Admitted, Busy> {
        let deadline = Instant::now() + self.limits.queue_wait;
        let busy = || Busy {
            plugin: plugin.to_owned(),
            waited: self.limits.queue_wait,
            per_plugin: self.limits.per_plugin,
            total: self.limits.total,
        };
        let of_plugin = {
            let mut places = self.per_plugin.lock().unwrap_or_else(|p| p.into_inner());
            places
                .entry(plugin.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_plugin.max(1))))
                .clone()
        };
        let plugin_place = tokio::time::timeout_at(deadline, of_plugin.acquire_owned())
            .await
            .map_err(|_| busy())?
            .expect("the semaphore is never closed");
        let total_place = tokio::time::timeout_at(deadline, self.total.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .expect("the semaphore is never closed");
        Ok(Admitted {
            _plugin: plugin_place,
            _total: total_place,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_past_the_places_is_refused_after_the_wait() {
        let admission = Admission::new(AdmissionLimits {
            per_plugin: 2,
            total: 3,
            queue_wait: Duration::from_millis(50),
        });
        let a1 = admission.admit("a").await.unwrap();
        let _a2 = admission.admit("a").await.unwrap();
        let busy = admission
            .admit("a")
            .await
            .err()
            .expect("a third call of a is refused");
        assert_eq!(busy.plugin, "a");
        let _b1 = admission.admit("b").await.unwrap();
        // Every place in all is taken now.
        assert!(admission.admit("c").await.is_err());
        drop(a1);
        admission.admit("c").await.unwrap();
    }
}
