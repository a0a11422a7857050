//! The tower layer (feature `tower`): [`LoadShedLayer`].
//!
//! Classifies each request ([`Classify`](crate::Classify)), asks the [`Shedder`](crate::Shedder) for a slot, and holds it until
//! the inner service's response future completes. A shed request gets 503 `overloaded` with
//! `Retry-After` and an RFC 9457 problem+json body naming its class and the reason
//! (`capacity`: its class's share is full; `overload`: the controller is shedding its class).
//! Counters per class: [`Shedder::snapshot`](crate::Shedder::snapshot); pressure changes are logged as `tracing` events.
//!
//! With a fleet shedder (`LoadShedLayer::with_fleet`, feature `redis`) a request the server
//! admits must also find room in the fleet's share for its class (`fleet_capacity`); the
//! per-server shedder stays the last line of defence. When the fleet's Redis is down the server
//! decides alone (or, failing closed, answers 503 `fleet_shedder_unavailable`); a misconfigured
//! fleet shedder answers 500 `fleet_shedder_misconfigured`.

mod future;
mod layer;
mod service;

pub use self::future::LoadShedFuture;
pub use self::layer::LoadShedLayer;
pub use self::service::LoadShedService;
