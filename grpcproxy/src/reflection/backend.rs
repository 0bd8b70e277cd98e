//! One reflection stream to one backend: requests written as length-prefixed frames on a
//! request body that stays open, answers read one by one (the protocol answers each
//! request in order). `grpc.reflection.v1` first, `v1alpha` when the backend does not
//! serve v1.

use std::io::Read as _;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Request};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Code, Status};
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use crate::boxed::BoxError;
use crate::Upstream;

/// The method of reflection v1.
pub(super) const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
/// The method of reflection v1alpha (the same messages).
pub(super) const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

type ResponseBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// An open reflection stream to one backend.
pub(super) struct BackendStream {
    frames: mpsc::Sender<Bytes>,
    body: ResponseBody,
    buffer: BytesMut,
    /// Whether answers may come gzip-compressed (the backend said `grpc-encoding: gzip`).
    gzip: bool,
    address: String,
}

impl std::fmt::Debug for BackendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendStream")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The request body: the frames queued, ending when the sender is dropped.
struct Frames(mpsc::Receiver<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|f| Ok(Frame::data(f))))
    }
}

/// `message` as one uncompressed gRPC frame.
fn frame(message: &ServerReflectionRequest) -> Bytes {
    let mut out = BytesMut::new();
    crate::frame::encode(false, &message.encode_to_vec(), &mut out);
    out.freeze()
}

impl BackendStream {
    /// Opens a reflection stream to `upstream` with `first` as its first request, within
    /// `timeout`, and reads the answer to it.
    pub(super) async fn open(
        upstream: &Upstream,
        first: &ServerReflectionRequest,
        timeout: Duration,
    ) -> Result<(Self, ServerReflectionResponse), Status> {
        let opened = tokio::time::timeout(timeout, async {
            match Self::open_at(upstream, V1, first).await {
                Err(status) if status.code() == Code::Unimplemented => {
                    Self::open_at(upstream, V1ALPHA, first).await
                }
                other => other,
            }
        })
        .await;
        opened.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "{} did not answer reflection within {timeout:?}",
                upstream.address()
            )))
        })
    }

    async fn open_at(
        upstream: &Upstream,
        path: &str,
        first: &ServerReflectionRequest,
    ) -> Result<(Self, ServerReflectionResponse), Status> {
        let (frames, queue) = mpsc::channel::<Bytes>(4);
        frames
            .try_send(frame(first))
            .expect("a new channel has room");
        let mut request = Request::new(Frames(queue));
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            "grpc-accept-encoding",
            HeaderValue::from_static("identity, gzip"),
        );
        let response = upstream
            .send(path, request)
            .await
            .map_err(|e| e.to_status())?;
        if let Some(status) = Status::from_header_map(response.headers()) {
            if status.code() != Code::Ok {
                return Err(status);
            }
        }
        let gzip = response
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mut stream = Self {
            frames,
            body: Box::pin(response.into_body()),
            buffer: BytesMut::new(),
            gzip,
            address: upstream.address().to_owned(),
        };
        let answer = stream.read().await?;
        Ok((stream, answer))
    }

    /// Sends `request` and reads its answer, within `timeout`.
    pub(super) async fn ask(
        &mut self,
        request: &ServerReflectionRequest,
        timeout: Duration,
    ) -> Result<ServerReflectionResponse, Status> {
        let address = self.address.clone();
        let asked = tokio::time::timeout(timeout, async {
            self.frames.send(frame(request)).await.map_err(|_| {
                Status::unavailable(format!("{address} ended its reflection stream"))
            })?;
            self.read().await
        })
        .await;
        asked.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "{} did not answer reflection within {timeout:?}",
                self.address
            )))
        })
    }

    /// The next answer on the stream.
    async fn read(&mut self) -> Result<ServerReflectionResponse, Status> {
        loop {
            if let Some(message) = self.next_message()? {
                return ServerReflectionResponse::decode(message).map_err(|e| {
                    Status::internal(format!(
                        "{}: an invalid reflection answer: {e}",
                        self.address
                    ))
                });
            }
            let ended =
                || Status::unavailable(format!("{} ended its reflection stream", self.address));
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        return Err(match Status::from_header_map(&trailers) {
                            Some(status) if status.code() != Code::Ok => status,
                            _ => ended(),
                        });
                    }
                },
                Some(Err(e)) => {
                    return Err(crate::status::status_from_upstream_error(
                        e.as_ref(),
                        &self.address,
                    ))
                }
                None => return Err(ended()),
            }
        }
    }

    /// One whole message off the buffer, decompressed, if it holds one.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        let compressed = self.buffer[0] & 1 == 1;
        self.buffer.advance(5);
        let message = self.buffer.split_to(len).freeze();
        if !compressed {
            return Ok(Some(message));
        }
        if !self.gzip {
            return Err(Status::internal(format!(
                "{}: a compressed reflection answer without grpc-encoding: gzip",
                self.address
            )));
        }
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&message[..])
            .read_to_end(&mut plain)
            .map_err(|e| {
                Status::internal(format!(
                    "{}: a reflection answer that does not gunzip: {e}",
                    self.address
                ))
            })?;
        Ok(Some(Bytes::from(plain)))
    }
}
