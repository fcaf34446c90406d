//! The CLI's side of the management socket, and starting the daemon on
//! demand so a new user needs no extra step.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::paths::Paths;
use crate::protocol::{encode, Reply, Request, Response, MAX_LINE};

/// Talking to the daemon failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No daemon, and starting one failed.
    #[error("the dom0 daemon is not running and starting it failed: {0}")]
    Start(String),
    /// Connected, but the exchange failed.
    #[error("talking to the dom0 daemon failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon's answer was not understood.
    #[error("the dom0 daemon's answer is not understood: {0}")]
    Protocol(String),
    /// The daemon refused.
    #[error("{0}")]
    Refused(String),
}

/// Connects, starting the daemon first if nobody listens.
pub fn connect(paths: &Paths) -> Result<UnixStream, ClientError> {
    if let Ok(s) = UnixStream::connect(paths.socket()) {
        return Ok(s);
    }
    start_daemon(paths)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(paths.socket()) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(ClientError::Start(format!(
                    "it did not open {} within 10 s ({e}); see {}",
                    paths.socket().display(),
                    paths.daemon_log().display()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Starts `dom0 daemon` in the background, in its own session, logging to
/// the run directory.
fn start_daemon(paths: &Paths) -> Result<(), ClientError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.run_dir)
        .map_err(|e| ClientError::Start(format!("creating {} failed: {e}", paths.run_dir.display())))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())
        .map_err(|e| ClientError::Start(format!("opening {} failed: {e}", paths.daemon_log().display())))?;
    let exe = std::env::current_exe().map_err(|e| ClientError::Start(format!("finding our own binary failed: {e}")))?;
    Command::new(exe)
        .arg("daemon")
        .env("SPLITPV_RUN_DIR", &paths.run_dir)
        .env("SPLITPV_STATE_DIR", &paths.state_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| ClientError::Start(e.to_string()))?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| ClientError::Start(format!("spawning it failed: {e}")))?;
    Ok(())
}

/// Sends one request on `stream` and reads the answer.
pub fn exchange(stream: &mut UnixStream, request: &Request) -> Result<Reply, ClientError> {
    let mut line = encode(request);
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    // Byte by byte: after a console reply the console's bytes follow on the
    // same stream and must not disappear into a buffer here.
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while answer.len() <= MAX_LINE {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        answer.push(byte[0]);
    }
    if answer.is_empty() {
        return Err(ClientError::Protocol("the daemon closed the connection without answering".into()));
    }
    match serde_json::from_slice::<Response>(&answer).map_err(|e| ClientError::Protocol(e.to_string()))? {
        Response::Ok { reply } => Ok(reply),
        Response::Error { message } => Err(ClientError::Refused(message)),
    }
}

/// One request on a fresh connection.
pub fn request(paths: &Paths, request: &Request) -> Result<Reply, ClientError> {
    let mut stream = connect(paths)?;
    exchange(&mut stream, request)
}
