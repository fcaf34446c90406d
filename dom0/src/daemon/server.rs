//! The management socket: one task per client, one JSON line each way.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::domain::Daemon;
use super::{host, DaemonError};
use crate::paths::Paths;
use crate::protocol::{encode, HostInfo, Reply, Request, Response, MAX_LINE};

/// Runs the daemon until SIGTERM/SIGINT; then kills the domains it owns.
pub fn run(paths: Paths) -> Result<(), DaemonError> {
    for dir in [&paths.run_dir, &paths.state_dir] {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DaemonError::Dir { path: dir.clone(), source })?;
    }
    let lock_path = paths.lock();
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| DaemonError::Lock { path: lock_path.clone(), source })?;
    let _lock = match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(DaemonError::AlreadyRunning(lock_path)),
        Err((_, e)) => return Err(DaemonError::Lock { path: lock_path, source: e.into() }),
    };
    // We hold the lock: a socket file left behind is stale.
    let socket = paths.socket();
    let _ = std::fs::remove_file(&socket);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(async move {
        let listener = UnixListener::bind(&socket).map_err(|source| DaemonError::Bind { path: socket.clone(), source })?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| DaemonError::Bind { path: socket.clone(), source })?;
        tracing::info!("dom0 daemon {} listening on {}", std::process::id(), socket.display());
        let daemon = Daemon::new(paths);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(DaemonError::Runtime)?;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let daemon = daemon.clone();
                        tokio::spawn(async move { serve_client(daemon, stream).await });
                    }
                    Err(e) => {
                        tracing::warn!("accepting a client failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("dom0 daemon stopping: destroying its domains");
        daemon.kill_all();
        let _ = std::fs::remove_file(&socket);
        Ok(())
    })
}

async fn send(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = encode(response);
    line.push('\n');
    stream.write_all(line.as_bytes()).await
}

fn ok(reply: Reply) -> Response {
    Response::Ok { reply }
}

async fn serve_client(daemon: Arc<Daemon>, mut stream: UnixStream) {
    let mut line = Vec::new();
    {
        let mut reader = BufReader::new(&mut stream).take(MAX_LINE as u64 + 1);
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) if line.last() == Some(&b'\n') => {}
            Ok(_) => {
                let _ = send(&mut stream, &Response::Error { message: format!("a request must be one line of at most {MAX_LINE} bytes.") }).await;
                return;
            }
            Err(e) => {
                tracing::debug!("reading a request failed: {e}");
                return;
            }
        }
    }
    let request = match serde_json::from_slice::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(&mut stream, &Response::Error { message: format!("the request is not understood: {e}.") }).await;
            return;
        }
    };
    tracing::debug!("request: {request:?}");
    let response = match request {
        Request::Create { spec, paused } => match daemon.create(spec, paused).await {
            Ok((id, name)) => ok(Reply::Created { id, name }),
            Err(message) => Response::Error { message },
        },
        Request::List => ok(Reply::Domains { domains: daemon.list() }),
        Request::Destroy { domain } => done(daemon.destroy(&domain).await),
        Request::Shutdown { domain, wait, timeout_s } => {
            done(daemon.request_shutdown(&domain, false, wait.then(|| Duration::from_secs(timeout_s.max(1)))).await)
        }
        Request::Reboot { domain } => done(daemon.request_shutdown(&domain, true, None).await),
        Request::Pause { domain } => done(daemon.set_paused(&domain, true).await),
        Request::Unpause { domain } => done(daemon.set_paused(&domain, false).await),
        Request::Info => ok(Reply::Info { host: host_info(&daemon).await }),
        Request::Top => ok(Reply::Top { domains: daemon.top().await }),
        Request::DomainInfo { domain } => match daemon.domain_info(&domain).await {
            Ok(domain) => ok(Reply::Domain { domain }),
            Err(message) => Response::Error { message },
        },
        Request::Audit { domain } => match daemon.audit(&domain).await {
            Ok((name, report)) => ok(Reply::Audit { name, report }),
            Err(message) => Response::Error { message },
        },
        Request::Console { domain, kind } => {
            match daemon.console_of(&domain, kind) {
                Ok((name, console, exited)) => {
                    if send(&mut stream, &ok(Reply::ConsoleAttached { name })).await.is_ok() {
                        relay_console(stream, console, exited).await;
                    }
                }
                Err(message) => {
                    let _ = send(&mut stream, &Response::Error { message }).await;
                }
            }
            return;
        }
    };
    let _ = send(&mut stream, &response).await;
}

fn done(r: Result<String, String>) -> Response {
    match r {
        Ok(message) => ok(Reply::Done { message }),
        Err(message) => Response::Error { message },
    }
}

async fn host_info(daemon: &Arc<Daemon>) -> HostInfo {
    let (text, backend) = daemon.host_info.get_or_init(host::hypervisor_info).await.clone();
    let f = host::facts();
    let domains = daemon.list();
    HostInfo {
        hostname: f.hostname,
        kernel: f.kernel,
        backend,
        hypervisor_info: text,
        cpus: f.cpus,
        memory_total_mib: f.memory_total_mib,
        memory_available_mib: f.memory_available_mib,
        domains_memory_mib: daemon.memory_in_use_mib(),
        domains: domains.len() as u32,
        daemon_pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Console bytes both ways until the client or the console goes away.
async fn relay_console(
    stream: UnixStream,
    console: crate::backends::ConsoleHandle,
    mut exited: tokio::sync::watch::Receiver<bool>,
) {
    let (mut read, mut write) = stream.into_split();
    let client = console.attach();
    if write.write_all(&client.scrollback).await.is_err() {
        return;
    }
    // The backend's client is a blocking channel: a thread moves its chunks
    // into the async world, and stops when the relay is dropped.
    let (tx, mut output) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || loop {
        let sent = match client.recv_timeout(Duration::from_millis(200)) {
            Some(chunk) => tx.blocking_send(chunk).is_ok(),
            None => !tx.is_closed(),
        };
        if !sent {
            break;
        }
    });
    let to_guest = async {
        let mut buf = [0u8; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // The input buffer is bounded; wait for the guest to
                    // take what did not fit rather than dropping keys.
                    let mut rest = &buf[..n];
                    while !rest.is_empty() {
                        let taken = console.send_input(rest);
                        rest = &rest[taken..];
                        if taken == 0 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        }
        // EOF from the client (a script's input ended): keep the output
        // flowing until the client closes its side.
        std::future::pending::<()>().await;
    };
    let to_client = async {
        while let Some(bytes) = output.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let domain_gone = async {
        let _ = exited.wait_for(|gone| *gone).await;
        // Let the last output reach the client.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tokio::select! {
        _ = to_guest => {}
        _ = to_client => {}
        _ = domain_gone => {}
    }
}
