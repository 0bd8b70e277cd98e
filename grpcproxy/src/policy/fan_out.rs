//! Fan-out: one call sent to several backends at once, their answers merged into the one
//! the client gets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::Upstream;

/// How the answers of a fanned-out call become the client's answer. The proxy never knows
/// a method's schema, so the mode also says what the method's responses are: one message
/// (the unary modes) or a stream ([`FanOutMode::Interleave`]).
///
/// A member that fails is named in the `x-grpcproxy-fanout-errors` trailer
/// (`name=CODE`, comma-separated) whenever the client gets an answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOutMode {
    /// Unary: the first OK answer, as it came; the other members' calls are cancelled.
    /// When none answers OK: the first error to come, the failures named.
    FirstSuccess,
    /// Unary: the first member's answer if every member answers OK; else the error of the
    /// first failing member (in member order), the failures named.
    All,
    /// Unary, for a response type whose fields are repeated (Talos-style envelopes): one
    /// message whose bytes are every OK member's response message in member order, each
    /// followed by what the `append` hook gives for its member; protobuf decodes the
    /// concatenation as one message holding every member's entries. Members are asked for
    /// uncompressed answers (`grpc-accept-encoding: identity`); a member that compresses
    /// anyway, or answers other than one message, counts as failed. OK when at least one
    /// member answered OK (the failures named); else the first member's error.
    Concat,
    /// Streaming: every member's response messages, whole, interleaved as they come; the
    /// call ends when every member has ended. OK when at least one member ended OK (the
    /// failures named); else the first member's error.
    Interleave,
}

/// What a slow member's request stream does when its buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowMember {
    /// The client waits (backpressure): every member goes at the pace of the slowest.
    Wait,
    /// The client waits up to `after` for the member to make room; then the member is
    /// dropped: its call is cancelled and counted as failed (`RESOURCE_EXHAUSTED`), the
    /// others go on. (Room is measured against the client, which may send faster than any
    /// member reads: the wait tells a member that keeps up from one that stopped.)
    Drop {
        /// How long a member may leave its buffer full.
        after: std::time::Duration,
    },
}

/// Adds bytes after one member's part of a [`FanOutMode::Concat`] answer: typically a
/// protobuf field carrying the member's name, so the client can tell the parts apart.
pub type AppendHook = Arc<dyn Fn(&str) -> Bytes + Send + Sync>;

/// Where a call is fanned out, and how the answers are merged (see
/// [`Target::fan_out`](crate::Target::fan_out)).
///
/// ```
/// use std::sync::Arc;
/// use grpcproxy::policy::{FanOut, FanOutMode};
/// use grpcproxy::{Target, Upstream};
/// use tonic::metadata::MetadataMap;
///
/// let dc1 = Upstream::new("http://127.0.0.1:50061").unwrap();
/// let dc2 = Upstream::new("http://127.0.0.1:50062").unwrap();
/// // Field 3 of the response envelope: the member's name (a length-delimited string).
/// let name_field = Arc::new(|name: &str| {
///     let mut field = vec![0x1a, name.len() as u8];
///     field.extend_from_slice(name.as_bytes());
///     bytes::Bytes::from(field)
/// });
/// let fan = FanOut::new(FanOutMode::Concat)
///     .member("dc1", dc1.clone())
///     .member("dc2", dc2)
///     .append(name_field);
/// let target = Target::new(dc1, MetadataMap::new()).fan_out(fan);
/// ```
#[derive(Clone)]
pub struct FanOut {
    pub(crate) mode: FanOutMode,
    pub(crate) members: Vec<(Arc<str>, Upstream)>,
    pub(crate) buffer_bytes: usize,
    pub(crate) response_bytes: usize,
    pub(crate) slow: SlowMember,
    pub(crate) append: Option<AppendHook>,
    pub(crate) stats: Option<Arc<FanOutStats>>,
}

/// What fanned-out calls came to, for whoever keeps count.
#[derive(Debug, Default)]
pub struct FanOutStats {
    ok: AtomicU64,
    partial: AtomicU64,
    failed: AtomicU64,
}

/// What one fanned-out call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOutResult {
    /// Every member answered OK.
    Ok,
    /// The client got OK, though some members failed (named in the trailers).
    Partial,
    /// The client got an error.
    Failed,
}

impl FanOutStats {
    /// Calls that came to `result`.
    pub fn count(&self, result: FanOutResult) -> u64 {
        self.counter(result).load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, result: FanOutResult) {
        self.counter(result).fetch_add(1, Ordering::Relaxed);
    }

    fn counter(&self, result: FanOutResult) -> &AtomicU64 {
        match result {
            FanOutResult::Ok => &self.ok,
            FanOutResult::Partial => &self.partial,
            FanOutResult::Failed => &self.failed,
        }
    }
}

impl FanOut {
    /// A fan-out in `mode`, with no members yet. Bounds: 1 MiB of request buffer per
    /// member, 4 MiB per answer held (unary modes), slow members waited for.
    pub fn new(mode: FanOutMode) -> Self {
        Self {
            mode,
            members: Vec::new(),
            buffer_bytes: 1 << 20,
            response_bytes: 4 << 20,
            slow: SlowMember::Wait,
            append: None,
            stats: None,
        }
    }

    /// Counts each call's result into `stats`.
    pub fn with_stats(mut self, stats: Arc<FanOutStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Sends the call to `upstream` too, named `name` in trailers and hooks.
    pub fn member(mut self, name: impl Into<Arc<str>>, upstream: Upstream) -> Self {
        self.members.push((name.into(), upstream));
        self
    }

    /// Request bytes each member may have waiting before [`SlowMember`] applies.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Response bytes held per member's answer in the unary modes; a longer answer counts
    /// as failed (`RESOURCE_EXHAUSTED`).
    pub fn response_bytes(mut self, bytes: usize) -> Self {
        self.response_bytes = bytes;
        self
    }

    /// What a member too slow to take the request stream does.
    pub fn slow_member(mut self, slow: SlowMember) -> Self {
        self.slow = slow;
        self
    }

    /// Adds `hook(member name)` after each member's part of a [`FanOutMode::Concat`]
    /// answer.
    pub fn append(mut self, hook: AppendHook) -> Self {
        self.append = Some(hook);
        self
    }

    /// The mode.
    pub fn mode(&self) -> FanOutMode {
        self.mode
    }

    /// The members' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(name, _)| &**name)
    }
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("mode", &self.mode)
            .field("members", &self.members)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("response_bytes", &self.response_bytes)
            .field("slow", &self.slow)
            .field("append", &self.append.is_some())
            .finish()
    }
}
