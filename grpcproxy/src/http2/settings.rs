//! HTTP/2 settings shared by the proxy's client and server sides.

use std::time::Duration;

/// HTTP/2 connection settings, as plain values with production defaults.
///
/// ```
/// use grpcproxy::Http2Settings;
///
/// let settings = Http2Settings {
///     initial_stream_window_size: 4 << 20,
///     ..Http2Settings::default()
/// };
/// assert_eq!(settings.initial_connection_window_size, 2 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Settings {
    /// Flow-control window of each stream, in bytes: what one call may have in flight.
    pub initial_stream_window_size: u32,
    /// Flow-control window of the whole connection, in bytes.
    pub initial_connection_window_size: u32,
    /// Largest DATA frame payload to accept, in bytes (16 KiB to 16 MiB).
    pub max_frame_size: u32,
    /// Largest header list to accept, in bytes.
    pub max_header_list_size: u32,
    /// Send an HTTP/2 PING this often to detect dead peers (`None`: never).
    pub keep_alive_interval: Option<Duration>,
    /// How long to wait for the PING acknowledgement before closing the connection.
    pub keep_alive_timeout: Duration,
    /// How many small DATA frames a connection may hold unread, as h2 counts them:
    /// each frame under 256 bytes costs `256 - payload` bytes of this budget until the
    /// call takes it, and a connection that runs out is closed with `ENHANCE_YOUR_CALM`.
    ///
    /// `None` (the default) sizes it so that a full connection window of the smallest
    /// gRPC messages (5-byte frames) always fits: `initial_connection_window_size / 5 *
    /// 251`. h2's own default (half the window) would let one slow client of a streaming
    /// call with small messages close the backend connection that every other call
    /// shares, and a backend that reads slowly close the connection of a client that
    /// streams small messages to it.
    pub data_frame_budget: Option<usize>,
}

/// The smallest DATA frame a gRPC peer sends whole: a message's 5-byte prefix.
const SMALLEST_GRPC_FRAME: usize = 5;

/// What h2 charges a DATA frame below this size while it waits to be read.
const SMALL_FRAME_COST: usize = 256;

impl Http2Settings {
    /// The budget for small DATA frames that connections get (see
    /// [`data_frame_budget`](Self::data_frame_budget)).
    ///
    /// ```
    /// use grpcproxy::Http2Settings;
    ///
    /// let settings = Http2Settings::default();
    /// assert_eq!(settings.resolved_data_frame_budget(), (2 << 20) / 5 * 251);
    /// let fixed = Http2Settings { data_frame_budget: Some(1 << 20), ..settings };
    /// assert_eq!(fixed.resolved_data_frame_budget(), 1 << 20);
    /// ```
    pub fn resolved_data_frame_budget(&self) -> usize {
        self.data_frame_budget.unwrap_or_else(|| {
            self.initial_connection_window_size as usize / SMALLEST_GRPC_FRAME
                * (SMALL_FRAME_COST - SMALLEST_GRPC_FRAME)
        })
    }
}

impl Http2Settings {
    /// These settings for a connection that carries up to `streams` calls of different
    /// clients at once (a backend connection): its window is raised to hold every stream's
    /// window, so that calls whose clients stopped reading (their data waits in the proxy,
    /// up to one stream window each) never stall the connection's other calls. What the
    /// proxy may hold stays bounded by the stream window per call; the budget for small
    /// DATA frames stays that of the configured connection window.
    pub(crate) fn isolating_streams(&self, streams: usize) -> Self {
        let needed = u64::from(self.initial_stream_window_size) * streams as u64;
        let window = needed.clamp(u64::from(self.initial_connection_window_size), MAX_WINDOW);
        Self {
            data_frame_budget: Some(self.resolved_data_frame_budget()),
            initial_connection_window_size: window as u32,
            ..self.clone()
        }
    }

    /// An h2 client builder for backend connections: these settings, and what hyper's
    /// client sets for the rest (bounded per-stream send buffers, no server push).
    pub(crate) fn client_builder(&self) -> h2::client::Builder {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .max_frame_size(self.max_frame_size)
            .max_header_list_size(self.max_header_list_size)
            .max_send_buffer_size(1 << 20)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .data_frame_budget(self.resolved_data_frame_budget())
            .enable_push(false);
        builder
    }

    /// An h2 server builder for client connections: these settings, and hyper's server
    /// defaults for the rest (a 400 KiB send buffer per stream).
    pub(crate) fn server_builder(
        &self,
        max_concurrent_streams: Option<u32>,
    ) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .max_frame_size(self.max_frame_size)
            .max_header_list_size(self.max_header_list_size)
            .max_send_buffer_size(400 << 10)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .data_frame_budget(self.resolved_data_frame_budget());
        if let Some(streams) = max_concurrent_streams {
            builder.max_concurrent_streams(streams);
        }
        builder
    }
}

/// The largest HTTP/2 flow-control window (2^31 - 1).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// Streams a connection may reset for errors of its own before it is closed (hyper's
/// default on both sides).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            initial_stream_window_size: 1 << 20,
            initial_connection_window_size: 2 << 20,
            max_frame_size: 16 << 10,
            max_header_list_size: 16 << 10,
            keep_alive_interval: None,
            keep_alive_timeout: Duration::from_secs(20),
            data_frame_budget: None,
        }
    }
}
