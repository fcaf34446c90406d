//! A domain's own console: the hypervisor process's console socket
//! (`hypervisor run --console-fd`), which carries the PV console
//! (`console_io`) and the emulated UART, relayed to a [`ConsoleHandle`]
//! (scrollback, attached clients, input) like the virtio-console's, so
//! `dom0 console` serves both the same way.
//!
//! Xen's `xl console` shows the PV console by default; so does ours. It
//! works from the guest's first byte (earlyprintk), before any driver has
//! probed a virtio device.

use std::io;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backends::ConsoleHandle;

/// Relays `socket` (dom0's end of the console socket pair) to a new
/// [`ConsoleHandle`] until the hypervisor closes its end. Must be called
/// from inside the tokio runtime.
#[allow(unsafe_code)]
pub fn relay(socket: std::os::unix::net::UnixStream) -> io::Result<ConsoleHandle> {
    let handle = ConsoleHandle::new()?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UnixStream::from_std(socket)?;
    let input_event = handle.input_event().try_clone()?;
    // SAFETY: the EventFd owns its descriptor, keeps it open until it is
    // dropped (which the AsyncFd does before anything else can reuse the
    // number) and always returns the same one from as_raw_fd.
    let input_ready = unsafe { AsyncFd::register(input_event) }.map_err(io::Error::from)?;
    let console = handle.clone();
    tokio::spawn(async move {
        let (mut from_hypervisor, mut to_hypervisor) = socket.into_split();
        let output = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match from_hypervisor.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => console.output(buf[..n].to_vec()),
                }
            }
        };
        let input = async {
            loop {
                let Ok(mut ready) = input_ready.readable().await else { break };
                ready.clear_ready();
                let bytes = console.take_input();
                if !bytes.is_empty() && to_hypervisor.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        };
        // Output ends when the hypervisor process is gone; input alone
        // ending (a write failed) means the same.
        tokio::select! {
            () = output => {}
            () = input => {}
        }
    });
    Ok(handle)
}
