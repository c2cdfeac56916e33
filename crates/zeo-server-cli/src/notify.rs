//! systemd's readiness protocol (`sd_notify`): one datagram per state
//! change to the socket `NOTIFY_SOCKET` names, when it names one.
//!
//! A service with `Type=notify` is "started" only once `READY=1` arrives,
//! so units ordered after zeo-server start when its addresses accept
//! connections, not when the process forks. Nothing is sent when the
//! variable is unset, so running outside systemd changes nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where the notifications go, read once from `NOTIFY_SOCKET`.
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for: a socket path, or an
    /// abstract socket name after `@`. Unset, empty or unusable: sends
    /// nothing (an unusable value is logged once).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET")
            .filter(|v| !v.is_empty())
            .and_then(|v| match address(&v) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!("NOTIFY_SOCKET {v:?}: {e}; not notifying systemd");
                    None
                }
            });
        Notifier { target }
    }

    /// Tells systemd the server accepts connections.
    pub fn ready(&self) {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS=serving",
            std::process::id()
        ));
    }

    /// Tells systemd the server is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down");
    }

    /// One datagram; a failure is logged, never fatal: the service works
    /// without it (systemd then times the start out, which says why).
    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), target));
        if let Err(e) = sent {
            tracing::warn!("notifying systemd over NOTIFY_SOCKET: {e}");
        }
    }
}

fn address(value: &std::ffi::OsStr) -> std::io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None => SocketAddr::from_pathname(value),
    }
}
