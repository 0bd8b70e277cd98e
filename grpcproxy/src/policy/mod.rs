//! Traffic policy a director applies to calls: when to try a call again ([`RetryPolicy`])
//! or send it twice at once ([`HedgePolicy`]),
//! or to a shadow backend too ([`MirrorPolicy`]), or to several backends at once, their
//! answers merged ([`FanOut`]),
//! how many retries a backend group can take ([`RetryBudget`]), how fast calls may come
//! ([`RateLimit`]) and how many one client may have open ([`PeerLimit`]).

mod budget;
mod fan_out;
mod hedge;
pub(crate) mod mirror;
mod peer_limit;
mod rate_limit;
pub(crate) mod retry;

pub use budget::RetryBudget;
pub use fan_out::{AppendHook, FanOut, FanOutMode, FanOutResult, FanOutStats, SlowMember};
pub use hedge::{HedgeDelay, HedgePolicy, HedgeStats};
pub use mirror::{Mirror, MirrorPolicy, MirrorResult, MirrorStats};
pub use peer_limit::{PeerGuard, PeerLimit};
pub use rate_limit::{RateKey, RateLimit};
pub use retry::{RetryPolicy, RetryStats};
