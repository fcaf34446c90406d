//! The domain table and each domain's lives: start the backends and the
//! hypervisor process, watch it, apply the `on_*` action when it ends.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypervisor::control::{ControlEvent, ControlRequest};
use tokio::sync::watch;

use super::control::ControlHandle;
use crate::backends::{self, BackendSpec, NetPort, RunningBackend, Switch};
use crate::config::{Action, DomainSpec, VifLink};
use crate::paths::{hypervisor_binary, Paths};
use crate::protocol::{ConsoleKind, DomainDetail, DomainInfo, DomainState, DomainTop};

/// A domain that restarts this often within [`RESTART_WINDOW`] is left
/// shut down instead of restarted again (a crash loop).
const MAX_RESTARTS: u32 = 10;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long building a domain may take before requests to it give up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a failed `create` waits for the end of the domain's process to
/// be classified (the process has ended or is being killed by then).
const END_VERDICT_WAIT: Duration = Duration::from_secs(10);
/// How long a control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(12);

/// The daemon's shared state.
pub struct Daemon {
    pub paths: Paths,
    table: Mutex<Table>,
    /// Cached `hypervisor info` (text, backend).
    pub host_info: tokio::sync::OnceCell<(String, String)>,
}

#[derive(Default)]
struct Table {
    next_id: u32,
    domains: BTreeMap<u32, Domain>,
    switches: HashMap<String, Arc<Switch>>,
}

struct Domain {
    id: u32,
    spec: DomainSpec,
    state: DomainState,
    starts: u32,
    /// Start times of recent lives, for crash-loop detection.
    recent_starts: Vec<Instant>,
    last_end: Option<String>,
    reboot_requested: bool,
    life: Option<Life>,
    /// Signalled with the end reason whenever a life ends for good.
    ended: watch::Sender<Option<String>>,
    /// The previous `top` sample.
    sample: Option<Sample>,
}

/// What `top` measured of a domain at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    vcpu_ns: u64,
    exits: u64,
    io: u64,
    paging_updates: u64,
    paging_rejected: u64,
}

/// Rates between two samples, per second (CPU: percent of one CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Rates {
    cpu_percent: f64,
    exits: f64,
    io: f64,
    paging_updates: f64,
    paging_rejected: f64,
}

impl Sample {
    /// The rates from `prev` to this sample; a counter that went down (a
    /// new life) counts as no change.
    fn rates_since(&self, prev: &Sample) -> Rates {
        let dt = self.at.saturating_duration_since(prev.at).as_secs_f64().max(1e-3);
        let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / dt;
        Rates {
            cpu_percent: per_s(self.vcpu_ns, prev.vcpu_ns) / 1e9 * 100.0,
            exits: per_s(self.exits, prev.exits),
            io: per_s(self.io, prev.io),
            paging_updates: per_s(self.paging_updates, prev.paging_updates),
            paging_rejected: per_s(self.paging_rejected, prev.paging_rejected),
        }
    }
}

struct Life {
    generation: u64,
    pid: u32,
    started: Instant,
    control: ControlHandle,
    backends: Vec<RunningBackend>,
    devices: Vec<String>,
    /// The domain's own console (PV console and UART) from the
    /// hypervisor's console socket.
    console: backends::ConsoleHandle,
    /// Becomes true once the process is gone.
    exited: watch::Receiver<bool>,
}

/// Why a life ended, as dom0 classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EndKind {
    Poweroff,
    Reboot,
    Crash,
}

impl Daemon {
    pub fn new(paths: Paths) -> Arc<Daemon> {
        Arc::new(Daemon {
            paths,
            table: Mutex::new(Table { next_id: 1, ..Table::default() }),
            host_info: tokio::sync::OnceCell::new(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("the table lock is never held across a panic")
    }

    /// Finds a domain by name or ID.
    fn resolve(table: &Table, domain: &str) -> Result<u32, String> {
        if let Ok(id) = domain.parse::<u32>() {
            if table.domains.contains_key(&id) {
                return Ok(id);
            }
        }
        table
            .domains
            .values()
            .find(|d| d.spec.name == domain)
            .map(|d| d.id)
            .ok_or_else(|| format!("there is no domain called or numbered \"{domain}\"."))
    }

    /// `create`: answers once the domain has started (its hypervisor said
    /// `started`), or with why it did not. A domain that ends before it
    /// started is handled as any end (its `on_crash` applies: by default it
    /// is gone; with `preserve` `list` keeps it with the reason), and the
    /// answer is the reason the hypervisor gave.
    pub async fn create(self: &Arc<Self>, spec: DomainSpec, paused: bool) -> Result<(u32, String), String> {
        let (id, mut ended) = {
            let mut t = self.table();
            if t.domains.values().any(|d| d.spec.name == spec.name) {
                return Err(format!("a domain called \"{}\" already exists.", spec.name));
            }
            let id = t.next_id;
            t.next_id += 1;
            t.domains.insert(
                id,
                Domain {
                    id,
                    spec: spec.clone(),
                    state: DomainState::Starting,
                    starts: 0,
                    recent_starts: Vec::new(),
                    last_end: None,
                    reboot_requested: false,
                    life: None,
                    ended: watch::channel(None).0,
                    sample: None,
                },
            );
            (id, t.domains[&id].ended.subscribe())
        };
        if let Err(e) = self.save_spec(&spec) {
            tracing::warn!("domain {}: its configuration could not be saved: {e}", spec.name);
        }
        if let Err(e) = self.start_life(id, paused).await {
            self.forget(id);
            return Err(e);
        }
        let control = self.table().domains.get(&id).and_then(|d| d.life.as_ref().map(|l| l.control.clone()));
        let started = match control {
            Some(c) => c.wait_started(START_TIMEOUT).await,
            None => Err("its hypervisor process ended before the domain started".to_string()),
        };
        let why = match started {
            Ok(()) => return Ok((id, spec.name)),
            Err(why) => why,
        };
        // The process ended (or never said it started): its end is
        // classified and on_crash applied by the life's watcher; wait for
        // that verdict, which carries the hypervisor's own reason.
        let verdict = match tokio::time::timeout(END_VERDICT_WAIT, ended.wait_for(|r| r.is_some())).await {
            Ok(Ok(r)) => r.clone(),
            _ => None,
        };
        let reason = match verdict {
            Some(r) => r,
            None => {
                let last_end = self.table().domains.get(&id).and_then(|d| d.last_end.clone());
                if last_end.is_none() {
                    // Still not started (or restarting): nothing of it may
                    // stay behind a failed create.
                    let _ = self.destroy(&id.to_string()).await;
                }
                last_end.unwrap_or(why)
            }
        };
        Err(format!("domain {} did not start: {reason}", spec.name))
    }

    fn save_spec(&self, spec: &DomainSpec) -> std::io::Result<()> {
        let path = self.paths.domain_state(&spec.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(spec).expect("specs serialize"))
    }

    /// Removes a domain that has no life from the table and its files.
    fn forget(&self, id: u32) {
        let removed = self.table().domains.remove(&id);
        if let Some(d) = removed {
            let _ = std::fs::remove_file(self.paths.domain_state(&d.spec.name));
            let _ = std::fs::remove_dir_all(self.paths.domain_dir(id));
            let _ = d.ended.send(Some(d.last_end.unwrap_or_else(|| "destroyed".into())));
        }
    }

    /// Starts the backends and the hypervisor process of domain `id`.
    ///
    /// Boxed: a life's watcher restarts the domain through this function,
    /// and the recursion needs a nameable `Send` future.
    fn start_life(self: &Arc<Self>, id: u32, paused: bool) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.start_life_inner(id, paused))
    }

    async fn start_life_inner(self: &Arc<Self>, id: u32, paused: bool) -> Result<(), String> {
        let (spec, switches) = {
            let mut t = self.table();
            let d = t.domains.get(&id).ok_or("the domain disappeared while starting")?;
            let spec = d.spec.clone();
            let mut switches = Vec::new();
            for vif in &spec.vifs {
                if let VifLink::Switch(name) = &vif.link {
                    let sw = t.switches.entry(name.clone()).or_insert_with(|| Switch::new(name)).clone();
                    switches.push((vif.devid, sw));
                }
            }
            (spec, switches)
        };
        let dir = self.paths.domain_dir(id);
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir(&dir).map_err(|e| format!("creating {} failed: {e}", dir.display()))?;

        // Backends first: the hypervisor connects to their sockets while it
        // builds the domain.
        let mut backends = Vec::new();
        let mut device_args = Vec::new();
        let mut devices = Vec::new();
        for disk in &spec.disks {
            let sock = dir.join(format!("blk-{}.sock", disk.vdev));
            let serial = format!("{}-{}", spec.name, disk.vdev);
            let b = backends::start(
                BackendSpec::Blk { path: disk.path.clone(), read_only: disk.read_only, serial: truncate(&serial, 20), direct: false },
                &sock,
            )
            .map_err(|e| format!("disk {} ({}): {e}", disk.vdev, disk.path.display()))?;
            backends.push(b);
            device_args.push(format!("blk:{}", sock.display()));
            devices.push(format!("blk:{}{}", disk.vdev, if disk.read_only { ":ro" } else { "" }));
        }
        for vif in &spec.vifs {
            let sock = dir.join(format!("net-{}.sock", vif.devid));
            let port = match &vif.link {
                VifLink::Bridge(bridge) => NetPort::Tap {
                    name: vif.vifname.clone().unwrap_or_else(|| format!("vif{id}.{}", vif.devid)),
                    bridge: Some(bridge.clone()),
                },
                VifLink::Switch(_) => NetPort::Switch(
                    switches.iter().find(|(d, _)| *d == vif.devid).map(|(_, s)| s.clone()).expect("collected above"),
                ),
            };
            let b = backends::start(BackendSpec::Net { mac: vif.mac.0, port }, &sock)
                .map_err(|e| format!("vif {} ({}): {e}", vif.devid, vif.mac))?;
            backends.push(b);
            device_args.push(format!("net:{}", sock.display()));
            devices.push(format!("net:{}", vif.mac));
        }
        let sock = dir.join("console.sock");
        let b = backends::start(BackendSpec::Console {}, &sock).map_err(|e| format!("console: {e}"))?;
        backends.push(b);
        device_args.push(format!("console:{}", sock.display()));
        devices.push("console".into());

        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair failed: {e}"))?;
        let (console_ours, console_theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair failed: {e}"))?;
        let console = super::console::relay(console_ours).map_err(|e| format!("the console relay could not start: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hypervisor.log"))
            .map_err(|e| format!("opening the domain's log failed: {e}"))?;
        let mut cmd = tokio::process::Command::new(hypervisor_binary());
        cmd.arg("run")
            .arg("--name")
            .arg(&spec.name)
            .arg("--kernel")
            .arg(&spec.kernel)
            .arg("--mem")
            .arg(spec.memory_mib.to_string())
            .arg("--vcpus")
            .arg(spec.vcpus.to_string())
            .arg("--cmdline")
            .arg(&spec.cmdline)
            .arg("--console-log")
            .arg(dir.join("serial.log"))
            .arg("--control-fd")
            .arg(CHILD_CONTROL_FD.to_string())
            .arg("--console-fd")
            .arg(CHILD_CONSOLE_FD.to_string())
            .arg("--paging")
            .arg(spec.paging.name())
            .arg("--paging-violation")
            .arg(spec.paging_violation.name());
        if let Some(r) = &spec.ramdisk {
            cmd.arg("--initrd").arg(r);
        }
        if paused {
            cmd.arg("--paused");
        }
        for d in &device_args {
            cmd.arg("--device").arg(d);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("duplicating the log fd failed: {e}"))?)
            .stderr(log)
            .kill_on_drop(false);
        pass_fds(&mut cmd, [(OwnedFd::from(theirs), CHILD_CONTROL_FD), (OwnedFd::from(console_theirs), CHILD_CONSOLE_FD)]);
        let mut child = cmd.spawn().map_err(|e| format!("starting {} failed: {e}", hypervisor_binary().display()))?;
        let pid = child.id().unwrap_or(0);
        ours.set_nonblocking(true).map_err(|e| format!("control socket: {e}"))?;
        let stream = tokio::net::UnixStream::from_std(ours).map_err(|e| format!("control socket: {e}"))?;
        let (control, control_task) = ControlHandle::start(stream, spec.name.clone());
        let (exited_tx, exited_rx) = watch::channel(false);

        let generation = {
            let mut t = self.table();
            let Some(d) = t.domains.get_mut(&id) else {
                let _ = child.start_kill();
                return Err("the domain was destroyed while starting".into());
            };
            d.starts += 1;
            let now = Instant::now();
            d.recent_starts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
            d.recent_starts.push(now);
            // `Starting` until the hypervisor reports `started`.
            d.state = DomainState::Starting;
            d.life = Some(Life {
                generation: u64::from(d.starts),
                pid,
                started: now,
                control: control.clone(),
                backends,
                devices,
                console,
                exited: exited_rx,
            });
            u64::from(d.starts)
        };
        tracing::info!("domain {} (id {id}) started: hypervisor pid {pid}", spec.name);

        // The domain is running (or paused) once the hypervisor says so.
        let daemon = self.clone();
        let started = control.clone();
        tokio::spawn(async move {
            if started.wait_started(START_TIMEOUT).await.is_ok() {
                let mut t = daemon.table();
                if let Some(d) = t.domains.get_mut(&id) {
                    let current = d.life.as_ref().map(|l| l.generation) == Some(generation);
                    if current && d.state == DomainState::Starting {
                        d.state = if paused { DomainState::Paused } else { DomainState::Running };
                    }
                }
            }
        });

        let daemon = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // The control task ends at EOF; give it a moment to deliver the
            // `ended` event the process sent just before exiting.
            let _ = tokio::time::timeout(Duration::from_secs(2), control_task).await;
            let _ = exited_tx.send(true);
            let event = control.ended.lock().expect("no panics while holding it").take();
            daemon.life_ended(id, generation, status, event).await;
        });
        Ok(())
    }

    /// A domain's process ended: classify, report, act.
    async fn life_ended(
        self: &Arc<Self>,
        id: u32,
        generation: u64,
        status: std::io::Result<std::process::ExitStatus>,
        event: Option<ControlEvent>,
    ) {
        let explained = event.is_some();
        let (kind, mut reason) = classify(status, event);
        if !explained {
            // The process said nothing on the control channel (a usage
            // error, a crash of the hypervisor itself): its last words are
            // in its log, which a destroy would remove.
            if let Some(tail) = log_tail(&self.paths.domain_dir(id).join("hypervisor.log")) {
                reason = format!("{reason}; its log ends with: {tail}");
            }
        }
        let action = {
            let mut t = self.table();
            let Some(d) = t.domains.get_mut(&id) else { return };
            if d.life.as_ref().map(|l| l.generation) != Some(generation) {
                return; // destroyed or already replaced
            }
            let life = d.life.take().expect("checked above");
            drop(life.backends); // stops them
            tracing::info!("domain {} (id {id}) ended: {reason}", d.spec.name);
            d.last_end = Some(reason.clone());
            let mut action = match kind {
                EndKind::Poweroff => d.spec.on_poweroff,
                EndKind::Reboot => d.spec.on_reboot,
                EndKind::Crash => d.spec.on_crash,
            };
            if d.reboot_requested && kind == EndKind::Poweroff {
                action = Action::Restart;
            }
            d.reboot_requested = false;
            if action == Action::Restart && d.recent_starts.len() as u32 >= MAX_RESTARTS {
                tracing::warn!("domain {} restarted {MAX_RESTARTS} times within a minute; leaving it shut down", d.spec.name);
                d.last_end = Some(format!("{reason}; not restarted: {MAX_RESTARTS} restarts within a minute"));
                action = Action::Preserve;
            }
            match action {
                Action::Restart => d.state = DomainState::Restarting,
                Action::Preserve => {
                    d.state = DomainState::Shutdown;
                    let _ = d.ended.send(Some(d.last_end.clone().unwrap_or_default()));
                }
                Action::Destroy => {}
            }
            action
        };
        match action {
            Action::Destroy => self.forget(id),
            Action::Preserve => {}
            Action::Restart => {
                if let Err(e) = self.start_life(id, false).await {
                    tracing::warn!("domain id {id}: restarting failed: {e}");
                    let mut t = self.table();
                    if let Some(d) = t.domains.get_mut(&id) {
                        d.state = DomainState::Shutdown;
                        d.last_end = Some(format!("{reason}; restarting failed: {e}"));
                        let _ = d.ended.send(d.last_end.clone());
                    }
                }
            }
        }
    }

    /// `destroy`: kill the process, free everything.
    pub async fn destroy(&self, domain: &str) -> Result<String, String> {
        let (id, name, life) = {
            let mut t = self.table();
            let id = Self::resolve(&t, domain)?;
            let d = t.domains.get_mut(&id).expect("resolved");
            d.last_end = Some("destroyed".into());
            (id, d.spec.name.clone(), d.life.take())
        };
        if let Some(mut life) = life {
            kill(life.pid);
            let _ = tokio::time::timeout(Duration::from_secs(10), life.exited.wait_for(|gone| *gone)).await;
            drop(life.backends);
        }
        self.forget(id);
        Ok(format!("domain {name} (id {id}) destroyed."))
    }

    /// The control channel of a domain that has a process, once the
    /// domain is built (requests before that would find no domain).
    async fn control_of(&self, domain: &str) -> Result<(u32, String, ControlHandle), String> {
        let (id, name, control) = {
            let t = self.table();
            let id = Self::resolve(&t, domain)?;
            let d = &t.domains[&id];
            let life = d
                .life
                .as_ref()
                .ok_or_else(|| format!("domain {} is not running (it is {:?}).", d.spec.name, d.state).to_lowercase())?;
            (id, d.spec.name.clone(), life.control.clone())
        };
        control.wait_started(START_TIMEOUT).await.map_err(|e| format!("domain {name}: {e}."))?;
        Ok((id, name, control))
    }

    /// `pause` / `unpause`.
    pub async fn set_paused(&self, domain: &str, paused: bool) -> Result<String, String> {
        let (id, name, control) = self.control_of(domain).await?;
        let request = if paused { ControlRequest::Pause } else { ControlRequest::Unpause };
        control.call(request, CONTROL_TIMEOUT).await?;
        if let Some(d) = self.table().domains.get_mut(&id) {
            d.state = if paused { DomainState::Paused } else { DomainState::Running };
        }
        Ok(format!("domain {name} {}.", if paused { "paused" } else { "unpaused" }))
    }

    /// `audit`: the hypervisor's direct-paging audit.
    pub async fn audit(&self, domain: &str) -> Result<(String, hypervisor::pv::audit::AuditReport), String> {
        let (_, name, control) = self.control_of(domain).await?;
        match control.call(ControlRequest::Audit, CONTROL_TIMEOUT).await? {
            ControlEvent::Audit(report) => Ok((name, report)),
            other => Err(format!("domain {name}: the hypervisor answered the audit with {other:?}.")),
        }
    }

    /// `shutdown` / `reboot`: the ACPI power button; a reboot restarts the
    /// domain once it has powered off.
    pub async fn request_shutdown(&self, domain: &str, reboot: bool, wait: Option<Duration>) -> Result<String, String> {
        let (id, name, control) = self.control_of(domain).await?;
        let mut ended = {
            let mut t = self.table();
            let d = t.domains.get_mut(&id).ok_or("the domain disappeared")?;
            d.reboot_requested = reboot;
            d.ended.subscribe()
        };
        ended.borrow_and_update();
        control.send(if reboot { ControlRequest::Reboot } else { ControlRequest::Shutdown })?;
        let verb = if reboot { "reboot" } else { "shutdown" };
        let Some(timeout) = wait else {
            return Ok(format!("domain {name}: {verb} requested (ACPI power button)."));
        };
        match tokio::time::timeout(timeout, ended.changed()).await {
            Ok(_) => {
                let why = ended.borrow().clone().unwrap_or_default();
                Ok(format!("domain {name} has shut down: {why}."))
            }
            Err(_) => Err(format!(
                "domain {name} did not shut down within {} s of the {verb} request (does its kernel handle the ACPI power button?).",
                timeout.as_secs()
            )),
        }
    }

    /// `list`.
    pub fn list(&self) -> Vec<DomainInfo> {
        let t = self.table();
        t.domains
            .values()
            .map(|d| DomainInfo {
                id: d.id,
                name: d.spec.name.clone(),
                state: d.state,
                memory_mib: d.spec.memory_mib,
                vcpus: d.spec.vcpus,
                pid: d.life.as_ref().map(|l| l.pid),
                uptime_s: d.life.as_ref().map_or(0, |l| l.started.elapsed().as_secs()),
                starts: d.starts,
                last_end: d.last_end.clone(),
                devices: d.life.as_ref().map(|l| l.devices.clone()).unwrap_or_default(),
                paging: d.spec.paging,
            })
            .collect()
    }

    /// `info NAME`: the `list` row, the paging policy and the hypervisor's
    /// paging counters (if it runs).
    pub async fn domain_info(&self, domain: &str) -> Result<DomainDetail, String> {
        let (id, policy, control) = {
            let t = self.table();
            let id = Self::resolve(&t, domain)?;
            let d = &t.domains[&id];
            (id, d.spec.paging_violation, d.life.as_ref().filter(|l| l.control.has_started()).map(|l| l.control.clone()))
        };
        let paging_counters = match control {
            Some(c) => match c.call(ControlRequest::Stats, CONTROL_TIMEOUT).await {
                Ok(ControlEvent::Stats(s)) => s.paging_counters,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let info = self.list().into_iter().find(|d| d.id == id).ok_or("the domain disappeared.")?;
        Ok(DomainDetail { info, paging_violation: policy, paging_counters })
    }

    /// RAM of the domains that have a process.
    pub fn memory_in_use_mib(&self) -> u64 {
        self.table().domains.values().filter(|d| d.life.is_some()).map(|d| d.spec.memory_mib).sum()
    }

    /// `top`: one stats call per running domain, rates since the previous
    /// `top`.
    pub async fn top(&self) -> Vec<DomainTop> {
        let targets: Vec<(u32, ControlHandle)> = {
            let t = self.table();
            t.domains
                .values()
                .filter_map(|d| d.life.as_ref().filter(|l| l.control.has_started()).map(|l| (d.id, l.control.clone())))
                .collect()
        };
        let mut stats = HashMap::new();
        for (id, control) in targets {
            if let Ok(ControlEvent::Stats(s)) = control.call(ControlRequest::Stats, CONTROL_TIMEOUT).await {
                stats.insert(id, s);
            }
        }
        let now = Instant::now();
        let mut t = self.table();
        t.domains
            .values_mut()
            .map(|d| {
                let s = stats.get(&d.id);
                let io: u64 = d.life.as_ref().map_or(0, |l| l.backends.iter().map(|b| b.stats().requests).sum());
                let (ns, exits) = s.map_or((0, 0), |s| (s.vcpu_time_ns, s.exits));
                let (updates, rejected) = s.map_or((0, 0), |s| (s.paging_updates, s.paging_rejected));
                let sample = Sample { at: now, vcpu_ns: ns, exits, io, paging_updates: updates, paging_rejected: rejected };
                let rates = match (&d.sample, s) {
                    (Some(prev), Some(_)) => sample.rates_since(prev),
                    _ => Rates::default(),
                };
                if s.is_some() {
                    d.sample = Some(sample);
                }
                DomainTop {
                    id: d.id,
                    name: d.spec.name.clone(),
                    state: d.state,
                    vcpus: d.spec.vcpus,
                    vcpu_time_s: ns as f64 / 1e9,
                    cpu_percent: rates.cpu_percent,
                    memory_mib: d.spec.memory_mib,
                    rss_mib: s.map_or(0.0, |s| s.rss_bytes as f64 / (1 << 20) as f64),
                    exits,
                    exits_per_s: rates.exits,
                    io_requests: io,
                    io_requests_per_s: rates.io,
                    paging: d.spec.paging,
                    paging_updates: updates,
                    paging_updates_per_s: rates.paging_updates,
                    paging_rejected: rejected,
                    paging_rejected_per_s: rates.paging_rejected,
                }
            })
            .collect()
    }

    /// One of the consoles of a running domain, and a receiver that turns
    /// true when the domain's process is gone.
    pub fn console_of(
        &self,
        domain: &str,
        kind: ConsoleKind,
    ) -> Result<(String, backends::ConsoleHandle, watch::Receiver<bool>), String> {
        let t = self.table();
        let id = Self::resolve(&t, domain)?;
        let d = &t.domains[&id];
        let life = d.life.as_ref().ok_or_else(|| format!("domain {} is not running.", d.spec.name))?;
        let console = match kind {
            ConsoleKind::Pv => life.console.clone(),
            ConsoleKind::Virtio => {
                life.backends.iter().find_map(|b| b.console()).ok_or("the domain has no virtio-console device.")?
            }
        };
        Ok((d.spec.name.clone(), console, life.exited.clone()))
    }

    /// Kills every domain (the daemon is stopping).
    pub fn kill_all(&self) {
        let t = self.table();
        for d in t.domains.values() {
            if let Some(l) = &d.life {
                kill(l.pid);
            }
        }
    }
}

fn classify(status: std::io::Result<std::process::ExitStatus>, event: Option<ControlEvent>) -> (EndKind, String) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(ControlEvent::Ended { reason, exit_code, detail }) = event {
        let kind = match reason.as_str() {
            "poweroff" => EndKind::Poweroff,
            "reboot" => EndKind::Reboot,
            "guest-exit" if exit_code == 0 => EndKind::Poweroff,
            _ => EndKind::Crash,
        };
        let text = if detail.is_empty() { reason } else { format!("{reason}: {detail}") };
        return (kind, text);
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (_, Some(sig)) => (EndKind::Crash, format!("killed: the hypervisor process died of signal {sig}")),
            (Some(code), _) => (EndKind::Crash, format!("crash: the hypervisor process exited with code {code} without reporting why")),
            _ => (EndKind::Crash, "crash: the hypervisor process ended".into()),
        },
        Err(e) => (EndKind::Crash, format!("crash: waiting for the hypervisor process failed: {e}")),
    }
}

/// The last non-empty line of a log, if any (at most 300 characters).
fn log_tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(line.chars().take(300).collect())
}

fn kill(pid: u32) {
    if pid == 0 {
        return;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The control socket's number in the hypervisor process.
pub const CHILD_CONTROL_FD: i32 = 3;
/// The console socket's number in the hypervisor process.
pub const CHILD_CONSOLE_FD: i32 = 4;

/// Gives the child each `(fd, number)`: `fd` becomes its descriptor
/// `number`, open across exec.
#[allow(unsafe_code)]
fn pass_fds<const N: usize>(cmd: &mut tokio::process::Command, fds: [(OwnedFd, i32); N]) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl, dup2 and close (async-signal-safe) on descriptors it
    // owns there. The fds are moved into the closure, so they stay open in
    // the parent until `cmd` is dropped.
    unsafe {
        cmd.pre_exec(move || {
            // First move every descriptor above the numbers wanted, so that
            // no dup2 below overwrites one still to be placed.
            let mut high = [-1; N];
            for (i, (fd, _)) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, 64);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, number)) in fds.iter().enumerate() {
                // dup2 clears FD_CLOEXEC on the new descriptor.
                if libc::dup2(high[i], *number) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high[i]);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexplained_end_is_a_crash_and_a_signal_is_named() {
        use std::os::unix::process::ExitStatusExt;
        let (k, why) = classify(Ok(std::process::ExitStatus::from_raw(9)), None);
        assert_eq!(k, EndKind::Crash);
        assert!(why.contains("signal 9"), "{why}");
        let ended = ControlEvent::Ended { reason: "reboot".into(), exit_code: 0, detail: String::new() };
        assert_eq!(classify(Ok(std::process::ExitStatus::from_raw(0)), Some(ended)).0, EndKind::Reboot);
        let exit = ControlEvent::Ended { reason: "guest-exit".into(), exit_code: 0, detail: "status 0".into() };
        assert_eq!(classify(Ok(std::process::ExitStatus::from_raw(0)), Some(exit)).0, EndKind::Poweroff);
    }

    #[test]
    fn top_rates_are_per_second_and_a_new_life_is_no_negative_rate() {
        let t0 = Instant::now();
        let prev = Sample { at: t0, vcpu_ns: 1_000_000_000, exits: 100, io: 10, paging_updates: 50, paging_rejected: 5 };
        let now = Sample { at: t0 + Duration::from_secs(2), vcpu_ns: 2_000_000_000, exits: 300, io: 10, paging_updates: 450, paging_rejected: 25 };
        let r = now.rates_since(&prev);
        assert_eq!(r, Rates { cpu_percent: 50.0, exits: 100.0, io: 0.0, paging_updates: 200.0, paging_rejected: 10.0 });
        // Counters of a restarted domain start again from zero.
        let restarted = Sample { paging_updates: 3, ..now };
        assert_eq!(restarted.rates_since(&now).paging_updates, 0.0);
    }
}
