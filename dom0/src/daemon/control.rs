//! dom0's end of a domain's control channel: newline-delimited JSON
//! ([`hypervisor::control`]) over the socketpair the hypervisor process got
//! as `--control-fd`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypervisor::control::{ControlEvent, ControlRequest};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

/// Longest event line we accept from a hypervisor process.
const MAX_EVENT_LINE: usize = 64 * 1024;

type Pending = oneshot::Sender<ControlEvent>;

/// Sends requests to one hypervisor process and receives its answers.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::UnboundedSender<(ControlRequest, Option<Pending>)>,
    /// The `ended` event, once the process sent it.
    pub ended: Arc<Mutex<Option<ControlEvent>>>,
    /// Turns true with the `started` event: the domain is built and its
    /// vCPUs are about to run. Requests before that would find no domain.
    started: watch::Receiver<bool>,
}

impl ControlHandle {
    /// Starts the task that owns the socket.
    pub fn start(stream: UnixStream, domain: String) -> (ControlHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ended = Arc::new(Mutex::new(None));
        let (started_tx, started) = watch::channel(false);
        let task = tokio::spawn(serve(stream, rx, ended.clone(), started_tx, domain));
        (ControlHandle { tx, ended, started }, task)
    }

    /// Waits until the hypervisor has reported `started` (the domain is
    /// built); an error if it ends first or takes longer than `timeout`.
    pub async fn wait_started(&self, timeout: Duration) -> Result<(), String> {
        let mut started = self.started.clone();
        let outcome = tokio::time::timeout(timeout, started.wait_for(|s| *s)).await.map(|r| r.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err("the domain's hypervisor process ended before the domain started".to_string()),
            Err(_) => Err(format!("the domain has not started within {} s", timeout.as_secs())),
        }
    }

    /// Whether the `started` event has arrived.
    pub fn has_started(&self) -> bool {
        *self.started.borrow()
    }

    /// Sends a request that has no answer.
    pub fn send(&self, request: ControlRequest) -> Result<(), String> {
        self.tx.send((request, None)).map_err(|_| "the domain's control channel is closed".to_string())
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, request: ControlRequest, timeout: Duration) -> Result<ControlEvent, String> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send((request, Some(reply_tx)))
            .map_err(|_| "the domain's control channel is closed".to_string())?;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(ControlEvent::Error { message })) => Err(format!("the hypervisor refused: {message}")),
            Ok(Ok(event)) => Ok(event),
            Ok(Err(_)) => Err("the domain's hypervisor process went away before answering".to_string()),
            Err(_) => Err(format!("the domain's hypervisor process did not answer within {} s", timeout.as_secs())),
        }
    }
}

async fn serve(
    stream: UnixStream,
    mut rx: mpsc::UnboundedReceiver<(ControlRequest, Option<Pending>)>,
    ended: Arc<Mutex<Option<ControlEvent>>>,
    started: watch::Sender<bool>,
    domain: String,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut line = Vec::new();
    loop {
        tokio::select! {
            request = rx.recv() => {
                let Some((request, reply)) = request else { break };
                let mut text = serde_json::to_string(&request).expect("control requests serialize");
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    // The process is gone; its monitor reports why.
                    break;
                }
                if let Some(reply) = reply {
                    pending.push_back(reply);
                }
            }
            read = read_line(&mut lines, &mut line) => {
                match read {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(why) => {
                        tracing::warn!("domain {domain}: dropping its control channel: {why}");
                        break;
                    }
                }
                match serde_json::from_slice::<ControlEvent>(&line) {
                    Ok(event @ ControlEvent::Ended { .. }) => {
                        *ended.lock().expect("no panics while holding it") = Some(event);
                    }
                    Ok(ControlEvent::Started { pid, backend }) => {
                        tracing::info!("domain {domain}: hypervisor process {pid} started on {backend}");
                        let _ = started.send(true);
                    }
                    Ok(event) => match pending.pop_front() {
                        Some(reply) => {
                            let _ = reply.send(event);
                        }
                        None => tracing::warn!("domain {domain}: unexpected control event {event:?}"),
                    },
                    Err(e) => tracing::warn!("domain {domain}: unreadable control event ({e})"),
                }
            }
        }
    }
}

/// Reads one line into `line` (without the newline); `Ok(false)` at EOF.
async fn read_line(reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>, line: &mut Vec<u8>) -> Result<bool, String> {
    line.clear();
    loop {
        let buf = reader.fill_buf().await.map_err(|e| format!("reading failed: {e}"))?;
        if buf.is_empty() {
            return Ok(false);
        }
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..pos]);
            reader.consume(pos + 1);
            return Ok(true);
        }
        let n = buf.len();
        line.extend_from_slice(buf);
        reader.consume(n);
        if line.len() > MAX_EVENT_LINE {
            return Err(format!("an event line is longer than {MAX_EVENT_LINE} bytes"));
        }
    }
}
