//! The boxed types every part of a call passes around: an error, and a request body (one
//! box per call, not per frame).

/// Any error a body or a connection can fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type sent on upstream connections.
pub(crate) type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;
