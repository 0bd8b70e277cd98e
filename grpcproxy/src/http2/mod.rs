//! HTTP/2 pieces both sides of the proxy share: the transport its connections run on, the
//! receive body, the pipe that sends a body, keepalive PINGs, the waker of the futures a
//! connection's task polls beside it, and the connection settings with their builders.

mod io;
mod keepalive;
mod pipe;
mod recv_body;
mod settings;
mod side_events;

pub(crate) use io::Io;
pub(crate) use keepalive::keepalive;
pub(crate) use pipe::{Cut, CutBy, Pipe, PipeCut};
pub use recv_body::RecvBody;
pub use settings::Http2Settings;
pub(crate) use side_events::SideEvents;
