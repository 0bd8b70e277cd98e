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
    /// Let hyper grow the windows from measured bandwidth-delay (overrides the sizes above)
    /// on client connections; backend connections keep the fixed sizes.
    pub adaptive_window: bool,
    /// Largest DATA frame payload to accept, in bytes (16 KiB to 16 MiB).
    pub max_frame_size: u32,
    /// Largest header list to accept, in bytes.
    pub max_header_list_size: u32,
    /// Send an HTTP/2 PING this often to detect dead peers (`None`: never).
    pub keep_alive_interval: Option<Duration>,
    /// How long to wait for the PING acknowledgement before closing the connection.
    pub keep_alive_timeout: Duration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            initial_stream_window_size: 1 << 20,
            initial_connection_window_size: 2 << 20,
            adaptive_window: false,
            max_frame_size: 16 << 10,
            max_header_list_size: 16 << 10,
            keep_alive_interval: None,
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}
