//! The message queue the transparent handler publishes proxied traffic to.
//!
//! Only the no-op queue exists so far: the tap that publishes calls, messages and statuses
//! to a broker is not built yet (see README, "Status").

/// A message queue the proxy can publish its traffic to. Publishing never blocks or fails
/// a call.
pub trait MessageQueue: Send + Sync + 'static {}

/// A queue that publishes nothing: the proxy forwards without a tap.
///
/// ```
/// use grpcproxy::mq::NoQueue;
/// let _queue = NoQueue;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQueue;

impl MessageQueue for NoQueue {}
