//! `lab up`: one supervisor, its children, and the live view.
//!
//! The order of things, and why:
//! 1. Decide on Redis and check every port *before* starting anything, so that a mistake costs
//!    nothing and is named precisely (the port, and the flag that moves it).
//! 2. Start the services (Redis, System 1, System 2, the dashboard) and wait until each answers its
//!    health endpoint; only then start the agents, so that start-up is not measured as latency.
//! 3. Each second, read the agents' `--live-json` lines, redraw the view and pass the lines on to
//!    the dashboard (on its stdin), so that the page shows the agents' figures beside its own;
//!    watch every child.
//! 4. At the end (`--for`, Ctrl-C, or a child that died) stop the agents first, so that they write
//!    their reports, then System 1, System 2 and Redis; print the summary; remove the temporary
//!    folder.

pub mod child;
pub mod config;
pub mod cpu;
pub mod fault;
pub mod ready;
pub mod redis;
pub mod view;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab_core::report::Report;

use self::child::{Child, STOP_GRACE, Spec, describe};
use self::config::{HttpProtocol, OnExit, OnlySystem, Port, Ports, UpArgs};
use self::fault::{Fault, FaultEvent, FaultKind, StalledDashboard};
use self::ready::{Probe, wait_ready};
use self::view::{Column, Screen};

/// How many times `--on-child-exit restart` starts one service again before giving up.
const MAX_RESTARTS: u32 = 5;

/// How a lab run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `--for` was over and the agents finished.
    Finished,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Something failed: a child died, or a service did not start.
    Failed(String),
}

/// A service the supervisor keeps running, with how to tell it is ready.
struct Service {
    child: Child,
    probes: Vec<Probe>,
    restarts: u32,
    /// Set while a fault holds it down: when to start it again (`None`: never), and the index of
    /// its event in [`Lab::events`]. Its exit is then the fault's doing, not a failure.
    down: Option<(Option<Instant>, usize)>,
}

/// The supervisor's state: its children and its screen.
struct Lab {
    args: UpArgs,
    ports: Ports,
    screen: Screen,
    logs: PathBuf,
    temp: PathBuf,
    /// Started in this order; stopped in reverse, after the agents.
    services: Vec<Service>,
    /// The agents of System 1 and of System 2.
    agents: [Option<Child>; 2],
    /// Why System 1, and System 2, is not running, when it is not.
    without: [Option<String>; 2],
    /// The second (`t`) of each system's agents last passed to the dashboard.
    forwarded: [Option<u64>; 2],
    /// When the agents started sending (their own timeline's zero, see
    /// [`Child::sending_since`]): the clock of `--fault`.
    sending_started: Option<Instant>,
    /// Every child's CPU time when sending began, and their CPU from then to the end of sending
    /// (warm-up and `--for`; or to the stop, if the run stopped early).
    cpu_start: cpu::Reading,
    cpu: Vec<cpu::ChildCpu>,
    /// `--fault`s not injected yet, soonest last.
    faults: Vec<Fault>,
    /// What the injected faults did, for `--json`.
    events: Vec<FaultEvent>,
    /// Stalled dashboards: their event, the connection, and when to let go of it (`None`: at the end).
    stalled: Vec<(usize, StalledDashboard, Option<Instant>)>,
}

/// Runs `lab up` to its end. The result is the process's exit code.
pub async fn up(args: UpArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut args = args;
    let ports = args.ports();
    // 1. Redis, the ports and the faults: nothing is started yet.
    let redis = choose_redis(&args);
    check_ports(&args, &ports, redis.as_ref().ok())?;
    check_faults(&mut args, redis.as_ref().ok())?;
    if let Some(path) = &args.json {
        // Found out now, not after a long run.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(".".as_ref());
        anyhow::ensure!(
            parent.is_dir(),
            "--json {}: the folder {} does not exist; nothing was started",
            path.display(),
            parent.display()
        );
    }

    let temp = tempfile::Builder::new()
        .prefix("telemetry-lab-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let logs = match &args.logs {
        Some(dir) => dir.clone(),
        None => temp.path().join("logs"),
    };
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut lab = Lab {
        args: args.clone(),
        ports,
        screen: Screen::default(),
        logs,
        temp: temp.path().to_path_buf(),
        services: Vec::new(),
        agents: [None, None],
        without: [
            None,
            (args.only == Some(OnlySystem::System1)).then(|| "not running: --only system1".to_string()),
        ],
        forwarded: [None, None],
        sending_started: None,
        cpu_start: cpu::Reading::default(),
        cpu: Vec::new(),
        faults: {
            let mut faults = args.faults.clone();
            faults.sort_by_key(|f| std::cmp::Reverse(f.at));
            faults
        },
        events: Vec::new(),
        stalled: Vec::new(),
    };
    lab.screen.say(&format!(
        "telemetry lab: starting; the dashboard will be at {} (logs in {})",
        lab.dashboard_url(),
        lab.logs.display()
    ));

    // 2 and 3, until something ends the run; Ctrl-C is heard from the very start.
    let mut signal = std::pin::pin!(stop_signal());
    let ending = tokio::select! {
        ending = lab.run(redis) => ending,
        () = &mut signal => Ending::Interrupted,
    };
    // 4. Whatever happened, every child is stopped.
    lab.screen.keep();
    match &ending {
        Ending::Finished => lab.screen.say("\nThe run is over: stopping."),
        Ending::Interrupted => lab
            .screen
            .say("\nInterrupted: stopping (the summary covers the time run)."),
        Ending::Failed(why) => lab.screen.say(&format!("\n{why}\nStopping everything.")),
    }
    lab.let_go_of_stalled(None).await;
    if lab.cpu.is_empty() {
        // Stopped before the sending was over (Ctrl-C, a failure): up to now.
        lab.cpu = lab.cpu_start.since(&lab.children());
    }
    lab.stop_all().await;
    let reports = lab.reports();
    let outcome = |i: usize| match (&reports[i], &lab.without[i]) {
        (Some(report), _) => Ok(report),
        (None, Some(why)) => Err(why.as_str()),
        (None, None) => Err("no report"),
    };
    let name1 = lab.system1_name();
    if reports.iter().any(Option::is_some) {
        lab.screen.say(&format!(
            "\nSummary (the agents' view; latencies count from each metric's due time):\n{}",
            view::summary([
                (&name1, outcome(0)),
                ("System 2: WebSocket, in memory", outcome(1)),
            ])
        ));
    }
    if let Some(path) = &args.json {
        let timeline = |i: usize| {
            lab.agents[i]
                .as_ref()
                .map(|a| a.history.lock().map(|h| h.clone()).unwrap_or_default())
        };
        let json = serde_json::json!({
            "system1": reports[0],
            "system2": reports[1],
            "live": { "system1": timeline(0), "system2": timeline(1) },
            "faults": lab.events,
            "cpu": lab.cpu,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        lab.screen.say(&format!("Wrote {}", path.display()));
    }
    let temp_path = temp.path().display().to_string();
    temp.close()
        .with_context(|| format!("cannot remove {temp_path}"))?;
    lab.screen.say(&format!(
        "Every child has stopped; removed {temp_path}{}.",
        args.logs
            .as_ref()
            .map_or(String::new(), |d| format!(" (logs kept in {})", d.display()))
    ));
    Ok(match ending {
        Ending::Failed(_) => std::process::ExitCode::FAILURE,
        _ => std::process::ExitCode::SUCCESS,
    })
}

/// Redis for System 1: a URL, or a private server to start; or why there is none.
enum Redis {
    Url(String),
    Private(PathBuf),
}

fn choose_redis(args: &UpArgs) -> Result<Redis, String> {
    if args.only == Some(OnlySystem::System2) {
        return Err("--only system2: System 1 and its Redis are not started".to_string());
    }
    if let Some(url) = &args.redis_url {
        return Ok(Redis::Url(url.clone()));
    }
    match redis::find_redis_server() {
        Some(program) => Ok(Redis::Private(program)),
        None => Err(redis::INSTALL_REDIS.to_string()),
    }
}

/// Fails, before anything starts, if a `--fault` cannot be injected in this lab; a `kill-worker`
/// turns on `--system1-processes`, so that one worker can die alone.
fn check_faults(args: &mut UpArgs, redis: Option<&Redis>) -> anyhow::Result<()> {
    for fault in &args.faults {
        match fault.kind {
            FaultKind::RestartRedis => anyhow::ensure!(
                matches!(redis, Some(Redis::Private(_))),
                "--fault {fault}: only the lab's private Redis can be killed and started again \
                 (leave out --redis-url / REDIS_URL); nothing was started"
            ),
            FaultKind::KillWorker => {
                anyhow::ensure!(
                    redis.is_some(),
                    "--fault {fault}: System 1 cannot run (no Redis), so it has no worker to kill; nothing was started"
                );
                args.system1_processes = true;
            }
            FaultKind::RestartSystem2 => anyhow::ensure!(
                args.only != Some(OnlySystem::System1),
                "--fault {fault}: System 2 does not run with --only system1; nothing was started"
            ),
            FaultKind::StallDashboard => {}
        }
    }
    Ok(())
}

/// Fails, naming the port and the flag that moves it, if a port the lab needs is taken.
fn check_ports(args: &UpArgs, ports: &Ports, redis: Option<&Redis>) -> anyhow::Result<()> {
    let mut needed: Vec<Port> = Vec::new();
    if redis.is_some() {
        needed.extend(&ports.all()[..4]);
    }
    if args.only != Some(OnlySystem::System1) {
        needed.push(ports.system2);
    }
    needed.push(ports.dashboard);
    if matches!(redis, Some(Redis::Private(_))) && args.redis_port != 0 {
        needed.push(Port {
            number: args.redis_port,
            what: "the private Redis",
            flag: "--redis-port",
        });
    }
    for (i, a) in needed.iter().enumerate() {
        if let Some(b) = needed[..i].iter().find(|b| b.number == a.number) {
            anyhow::bail!(
                "port {} is given to both {} ({}) and {} ({}); change one of them",
                a.number,
                b.what,
                b.flag,
                a.what,
                a.flag
            );
        }
    }
    for port in &needed {
        if let Err(e) = std::net::TcpListener::bind((args.host, port.number)) {
            anyhow::bail!(
                "port {} ({}) is not available on {}: {e}. Choose another with {} (or move every port \
                 with --base-port); nothing was started",
                port.number,
                port.what,
                args.host,
                port.flag
            );
        }
    }
    Ok(())
}

impl Lab {
    fn system1_name(&self) -> String {
        let via = match self.args.protocol {
            HttpProtocol::Http1 => "HTTP/1.1",
            HttpProtocol::Http2 => "HTTP/2",
        };
        format!("System 1: {via} → Redis → workers")
    }

    /// Where the services are reached from here.
    fn address(&self, port: u16) -> SocketAddr {
        let ip = if self.args.host.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.args.host
        };
        SocketAddr::new(ip, port)
    }

    /// The dashboard page, as a browser on this machine opens it.
    fn dashboard_url(&self) -> String {
        format!("http://{}/", self.address(self.ports.dashboard.number))
    }

    fn report_path(&self, system: usize) -> PathBuf {
        self.temp.join(format!("system{}-agents.json", system + 1))
    }

    /// Starts everything, then watches until the run ends.
    async fn run(&mut self, redis: Result<Redis, String>) -> Ending {
        if let Err(e) = self.start(redis).await {
            return Ending::Failed(format!("{e:#}"));
        }
        self.watch().await
    }

    async fn start(&mut self, redis: Result<Redis, String>) -> anyhow::Result<()> {
        let host = self.args.host.to_string();
        let ports = self.ports;
        let redis_url = match redis {
            Ok(Redis::Url(url)) => Some(url),
            Ok(Redis::Private(program)) => {
                let port = match self.args.redis_port {
                    0 => lab_free_port()?,
                    port => port,
                };
                let dir = self.temp.join("redis");
                std::fs::create_dir_all(&dir)?;
                let spec = redis::private_with_fsync(program, port, &dir, self.args.redis_fsync)?;
                let probe = Probe::RedisPing(SocketAddr::from(([127, 0, 0, 1], port)));
                self.start_service(spec, vec![probe]).await?;
                Some(format!("redis://127.0.0.1:{port}"))
            }
            Err(why) => {
                self.screen.say(&why);
                self.without[0] = Some(if self.args.only == Some(OnlySystem::System2) {
                    "not running: --only system2".to_string()
                } else {
                    "not running: no Redis".to_string()
                });
                None
            }
        };
        if let Some(url) = &redis_url {
            self.start_system1(url).await?;
        }
        if self.without[1].is_none() {
            let args = strings(&[
                "--log-format",
                "json",
                "--host",
                &host,
                "--port",
                &ports.system2.number.to_string(),
            ]);
            let probes = vec![Probe::Http(self.address(ports.system2.number), "/api/health")];
            self.start_service(Spec::lab("system2", "system2", args)?, probes)
                .await?;
        }

        let system2 = self.address(ports.system2.number);

        // The dashboard: the page opens both systems' WebSockets itself (at the addresses given
        // here); the server relays their health and monitoring, and reads the agents' figures
        // from its stdin (`--agents-stdin`, fed in `watch`).
        let http = |port: u16| format!("http://{}", self.address(port));
        let ws = |port: u16| format!("ws://{}/", self.address(port));
        let args = strings(&[
            "--agents-stdin",
            "--log-format",
            "json",
            "--host",
            &host,
            "--port",
            &ports.dashboard.number.to_string(),
            "--system1-ws",
            &ws(ports.ws.number),
            "--system1-api",
            &http(ports.http.number),
            "--system1-ops",
            &http(ports.ops.number),
            "--system1-broadcaster",
            &http(ports.ws.number),
            "--system2-ws",
            &ws(ports.system2.number),
            "--system2-http",
            &http(ports.system2.number),
        ]);
        let probes = vec![Probe::Http(self.address(ports.dashboard.number), "/api/health")];
        self.start_service(Spec::lab("dashboard", "dashboard", args)?, probes)
            .await?;
        let absent: Vec<String> = self
            .without
            .iter()
            .zip(["System 1", "System 2"])
            .filter(|(why, _)| why.is_some())
            .map(|(_, name)| format!(" ({name} is not running)"))
            .collect();
        self.screen.say(&format!(
            "\ndashboard: {}  <- open it in a browser: both systems live, side by side{}\n",
            self.dashboard_url(),
            absent.concat()
        ));
        let others: Vec<String> = self
            .dashboard_urls()
            .into_iter()
            .rev()
            .map(|(name, url)| format!("{url} ({name})"))
            .collect();
        self.screen.say(&format!(
            "Other dashboards can subscribe at {}.",
            others.join(" and ")
        ));

        // The agents, last: one process per system.
        if redis_url.is_some() {
            let (port, protocol) = match self.args.protocol {
                HttpProtocol::Http1 => (ports.http.number, "http1"),
                HttpProtocol::Http2 => (ports.http2.number, "http2"),
            };
            let mut args = strings(&[
                "--target",
                &format!("http://{}", self.address(port)),
                "--protocol",
                protocol,
                "--dashboard",
                &format!("ws://{}", self.address(ports.ws.number)),
                "--json",
                &self.report_path(0).display().to_string(),
            ]);
            args.extend(self.args.agents_args());
            self.agents[0] = Some(self.start_agents("agents-system1", args)?);
        }
        if self.without[1].is_none() {
            let mut args = strings(&[
                "--target",
                &format!("ws://{system2}"),
                "--dashboard",
                &format!("ws://{system2}"),
                "--json",
                &self.report_path(1).display().to_string(),
            ]);
            args.extend(self.args.agents_args());
            self.agents[1] = Some(self.start_agents("agents-system2", args)?);
        }
        Ok(())
    }

    /// System 1: one `system1 all` process, or (`--system1-processes`) the API, the broadcaster
    /// and each worker as its own process, in that order.
    async fn start_system1(&mut self, url: &str) -> anyhow::Result<()> {
        let host = self.args.host.to_string();
        let ports = self.ports;
        let common = ["--redis-url", url, "--log-format", "json"];
        let api = [
            "--host",
            &host,
            "--http-port",
            &ports.http.number.to_string(),
            "--http2-port",
            &ports.http2.number.to_string(),
        ]
        .map(str::to_string);
        let broadcaster = ["--ws-host", &host, "--ws-port", &ports.ws.number.to_string()].map(str::to_string);
        let claim_idle = self.args.system1_claim_idle.as_millis().to_string();
        let lease = self.args.system1_lease.as_millis().to_string();
        let worker = |ops_port: u16, workers: u64| {
            [
                "--ops-host",
                &host,
                "--ops-port",
                &ops_port.to_string(),
                "--workers",
                &workers.to_string(),
                "--claim-idle-ms",
                &claim_idle,
                "--lease-ms",
                &lease,
            ]
            .map(str::to_string)
        };
        let api_probes = || {
            vec![
                Probe::Http(self.address(ports.http.number), "/healthz"),
                Probe::Http(self.address(ports.http2.number), "/healthz"),
            ]
        };
        let args = |role: &str, flags: &[String]| {
            let mut args = strings(&common);
            args.push(role.into());
            args.extend(flags.iter().map(OsString::from));
            args
        };
        if !self.args.system1_processes {
            let mut flags = api.to_vec();
            flags.extend(broadcaster);
            flags.extend(worker(ports.ops.number, self.args.system1_workers));
            let mut probes = api_probes();
            probes.push(Probe::Http(self.address(ports.ws.number), "/api/health"));
            probes.push(Probe::Http(self.address(ports.ops.number), "/healthz"));
            return self
                .start_service(Spec::lab("system1", "system1", args("all", &flags))?, probes)
                .await;
        }
        let probes = api_probes();
        self.start_service(Spec::lab("system1-api", "system1", args("api", &api))?, probes)
            .await?;
        let probes = vec![Probe::Http(self.address(ports.ws.number), "/api/health")];
        self.start_service(
            Spec::lab(
                "system1-broadcaster",
                "system1",
                args("broadcaster", &broadcaster),
            )?,
            probes,
        )
        .await?;
        for n in 1..=self.args.system1_workers {
            // The first worker has the ops port `lab up` names; the others take free ones.
            let port = if n == 1 {
                ports.ops.number
            } else {
                lab_free_port()?
            };
            let mut flags = worker(port, 1).to_vec();
            // A name of its own, so that a worker started again after a fault is the same consumer.
            flags.extend(["--consumer-name".to_string(), format!("lab-worker-{n}")]);
            let probes = vec![Probe::Http(self.address(port), "/healthz")];
            self.start_service(
                Spec::lab(&format!("system1-worker-{n}"), "system1", args("worker", &flags))?,
                probes,
            )
            .await?;
        }
        Ok(())
    }

    async fn start_service(&mut self, spec: Spec, probes: Vec<Probe>) -> anyhow::Result<()> {
        let child = Child::spawn(spec, &self.logs)?;
        self.screen.say(&format!(
            "started {} (pid {}); waiting until it is ready",
            child.spec.name, child.pid
        ));
        let started = Instant::now();
        // Kept from the start, so that it is stopped (and said to be) even if it never gets ready.
        self.services.push(Service {
            child,
            probes,
            restarts: 0,
            down: None,
        });
        let service = self.services.last_mut().expect("just pushed");
        for probe in &service.probes {
            wait_ready(&mut service.child, probe, self.args.ready_timeout).await?;
        }
        self.screen.say(&format!(
            "{} is ready ({:.1} s)",
            service.child.spec.name,
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn start_agents(&mut self, name: &str, args: Vec<OsString>) -> anyhow::Result<Child> {
        let mut spec = Spec::lab(name, "agents", args)?;
        spec.live = true;
        let child = Child::spawn(spec, &self.logs)?;
        self.screen.say(&format!("started {name} (pid {})", child.pid));
        Ok(child)
    }

    /// Each second: redraw the view; at every tick: look after the children.
    async fn watch(&mut self) -> Ending {
        let heading = format!(
            "telemetry lab · each system: {} metrics/s from {} agents, batch {}",
            self.args.rate, self.args.agents, self.args.batch
        );
        self.screen.say("");
        let started = Instant::now();
        let mut drawn_secs = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            match self.sending_started {
                None => self.note_sending_start(),
                Some(since) => {
                    // The CPU of the sending time, read as it ends (the agents still running).
                    let sending = self.args.warmup + self.args.run_for.unwrap_or(Duration::MAX);
                    if self.cpu.is_empty() && since.elapsed() >= sending {
                        self.cpu = self.cpu_start.since(&self.children());
                    }
                }
            }
            if let Some(ending) = self.inject_faults().await {
                return ending;
            }
            if let Some(ending) = self.look_after_services().await {
                return ending;
            }
            let mut finished = 0;
            for agents in &mut self.agents {
                let Some(agents) = agents else {
                    finished += 1;
                    continue;
                };
                if let Some(status) = agents.exited() {
                    if status.success() && self.args.run_for.is_some() {
                        finished += 1;
                    } else {
                        return Ending::Failed(format!(
                            "{} (pid {}) exited ({}) before the run was over. The end of its log ({}):\n{}",
                            agents.spec.name,
                            agents.pid,
                            describe(status),
                            agents.log.display(),
                            agents.tail(15)
                        ));
                    }
                }
            }
            if finished == 2 {
                return Ending::Finished;
            }
            self.forward_to_dashboard();
            let secs = started.elapsed().as_secs();
            if secs > drawn_secs {
                drawn_secs = secs;
                let columns = self.columns();
                let name1 = self.system1_name();
                self.screen.live(
                    secs,
                    &heading,
                    [
                        (&name1, &columns[0]),
                        ("System 2: WebSocket, in memory", &columns[1]),
                    ],
                );
            }
        }
    }

    /// Passes each system's newest agents' second to the dashboard's stdin, once. A second the
    /// dashboard is not ready to read is skipped (never waited for: see [`Child::offer_line`]).
    fn forward_to_dashboard(&mut self) {
        let Some(dashboard) = self
            .services
            .iter_mut()
            .find(|s| s.child.spec.name == "dashboard")
        else {
            return;
        };
        for (i, agents) in self.agents.iter().enumerate() {
            let Some(second) = agents
                .as_ref()
                .and_then(|a| a.live.as_ref())
                .and_then(|rx| rx.borrow().clone())
            else {
                continue;
            };
            if self.forwarded[i] == Some(second.second.t) {
                continue;
            }
            let line = serde_json::json!({"system": format!("system{}", i + 1), "second": second});
            if dashboard.child.offer_line(&line.to_string()) {
                self.forwarded[i] = Some(second.second.t);
            }
        }
    }

    fn columns(&self) -> [Column; 2] {
        let column = |i: usize| match &self.agents[i] {
            Some(child) => Column::Live(
                child
                    .live
                    .as_ref()
                    .and_then(|rx| rx.borrow().clone())
                    .map(Box::new),
            ),
            None => Column::Absent(
                self.without[i]
                    .clone()
                    .unwrap_or_else(|| "not running".to_string()),
            ),
        };
        [column(0), column(1)]
    }

    /// Injects the `--fault`s that are due, starts again what a fault's down time was over for,
    /// and lets go of stalled dashboards whose time is up. A service that cannot start again ends
    /// the run, as any dead service does.
    async fn inject_faults(&mut self) -> Option<Ending> {
        let started = self.sending_started?;
        let since = |started: Instant| started.elapsed().as_secs_f64();
        while self.faults.last().is_some_and(|f| started.elapsed() >= f.at) {
            let fault = self.faults.pop().expect("just seen");
            let index = self.events.len();
            let until = fault.down.map(|d| Instant::now() + d);
            let mut what = Vec::new();
            if fault.kind == FaultKind::StallDashboard {
                for (system, url) in self.dashboard_urls() {
                    match StalledDashboard::open(system, &url).await {
                        Ok(stalled) => {
                            what.push(format!(
                                "{system}: a dashboard subscribed at {url} and stopped reading"
                            ));
                            self.stalled.push((index, stalled, until));
                        }
                        Err(e) => what.push(e),
                    }
                }
            } else {
                let target = |name: &str| match fault.kind {
                    FaultKind::KillWorker => name.starts_with("system1-worker-"),
                    FaultKind::RestartRedis => name == "redis",
                    _ => name == "system2",
                };
                match self
                    .services
                    .iter_mut()
                    .find(|s| s.down.is_none() && target(&s.child.spec.name))
                {
                    Some(service) => {
                        let (name, pid) = (service.child.spec.name.clone(), service.child.pid);
                        service.child.crash().await;
                        service.down = Some((until, index));
                        what.push(format!(
                            "kill -9 {name} (pid {pid}){}",
                            fault.down.map_or(", not started again".to_string(), |d| format!(
                                ", started again {} s later",
                                d.as_secs_f64()
                            ))
                        ));
                    }
                    None => what.push("nothing of that kind was running to kill".to_string()),
                }
            }
            self.screen.say(&format!("fault {fault}: {}", what.join("; ")));
            self.events.push(FaultEvent {
                fault: fault.to_string(),
                kind: fault.kind,
                at_s: since(started),
                back_s: None,
                what,
            });
        }
        for i in 0..self.services.len() {
            let Some((Some(at), index)) = self.services[i].down else {
                continue;
            };
            if Instant::now() < at {
                continue;
            }
            let service = &mut self.services[i];
            let mut child = match Child::spawn(service.child.spec.clone(), &self.logs) {
                Ok(child) => child,
                Err(e) => return Some(Ending::Failed(format!("{e:#}"))),
            };
            for probe in &service.probes {
                if let Err(e) = wait_ready(&mut child, probe, self.args.ready_timeout).await {
                    service.child = child;
                    return Some(Ending::Failed(format!("after the fault, {e:#}")));
                }
            }
            let back = since(started);
            let said = format!(
                "{} started again (pid {}), ready {back:.1} s after sending began",
                child.spec.name, child.pid
            );
            self.screen.say(&format!("fault: {said}"));
            service.child = child;
            service.down = None;
            self.events[index].back_s = Some(back);
            self.events[index].what.push(said);
        }
        self.let_go_of_stalled(Some(Instant::now())).await;
        None
    }

    /// Once one of the agents has said when it began sending (the earlier of the two): the clock
    /// of `--fault` starts, and every child's CPU time is read.
    fn note_sending_start(&mut self) {
        self.sending_started = self
            .agents
            .iter()
            .flatten()
            .filter_map(|a| a.sending_since.get().copied())
            .min();
        if self.sending_started.is_some() {
            self.cpu_start = cpu::Reading::take(&self.children());
        }
    }

    /// Every child running now, by name and process group (its pid: each is a group leader).
    fn children(&self) -> Vec<(String, u32)> {
        self.services
            .iter()
            .map(|s| &s.child)
            .chain(self.agents.iter().flatten())
            .filter(|c| c.status.is_none())
            .map(|c| (c.spec.name.clone(), c.pid))
            .collect()
    }

    /// The dashboard WebSocket of each system that runs.
    fn dashboard_urls(&self) -> Vec<(&'static str, String)> {
        let mut urls = Vec::new();
        if self.without[0].is_none() {
            urls.push((
                "System 1",
                format!("ws://{}/", self.address(self.ports.ws.number)),
            ));
        }
        if self.without[1].is_none() {
            urls.push((
                "System 2",
                format!("ws://{}/", self.address(self.ports.system2.number)),
            ));
        }
        urls
    }

    /// Reads what became of each stalled dashboard whose time is up by `now` (all of them with
    /// `None`, before the lab stops, so that a close at shutdown is not mistaken for the server's
    /// verdict), and records it with its fault.
    async fn let_go_of_stalled(&mut self, now: Option<Instant>) {
        let mut kept = Vec::new();
        for (index, stalled, until) in std::mem::take(&mut self.stalled) {
            if now.is_some_and(|now| until.is_none_or(|until| until > now)) {
                kept.push((index, stalled, until));
                continue;
            }
            let verdict = stalled.verdict(Duration::from_secs(2)).await;
            self.screen.say(&format!("fault: {verdict}"));
            self.events[index].what.push(verdict);
        }
        self.stalled = kept;
    }

    /// A service that died: restart it (`--on-child-exit restart`) or end the run. One a fault
    /// holds down is left alone.
    async fn look_after_services(&mut self) -> Option<Ending> {
        for i in 0..self.services.len() {
            if self.services[i].down.is_some() {
                continue;
            }
            let Some(status) = self.services[i].child.exited() else {
                continue;
            };
            let service = &self.services[i];
            let what = format!(
                "{} (pid {}) exited ({}). The end of its log ({}):\n{}",
                service.child.spec.name,
                service.child.pid,
                describe(status),
                service.child.log.display(),
                service.child.tail(15)
            );
            if self.args.on_child_exit == OnExit::Stop || service.restarts >= MAX_RESTARTS {
                return Some(Ending::Failed(what));
            }
            let restarts = service.restarts + 1;
            self.screen.say(&format!(
                "{what}\nstarting {} again (restart {restarts} of {MAX_RESTARTS})",
                service.child.spec.name
            ));
            let spec = service.child.spec.clone();
            let probes = service.probes.clone();
            let mut child = match Child::spawn(spec, &self.logs) {
                Ok(child) => child,
                Err(e) => return Some(Ending::Failed(format!("{e:#}"))),
            };
            for probe in &probes {
                if let Err(e) = wait_ready(&mut child, probe, self.args.ready_timeout).await {
                    self.services[i].child = child;
                    return Some(Ending::Failed(format!("{e:#}")));
                }
            }
            self.screen
                .say(&format!("{} is ready again (pid {})", child.spec.name, child.pid));
            self.services[i] = Service {
                child,
                probes,
                restarts,
                down: None,
            };
        }
        None
    }

    /// Stops the agents (so that they write their reports), then the services in reverse order.
    async fn stop_all(&mut self) {
        let mut agents: Vec<&mut Child> = self.agents.iter_mut().flatten().collect();
        let stops = agents.iter_mut().map(|a| a.stop(STOP_GRACE));
        let outcomes = futures_util::future::join_all(stops).await;
        for (agents, how) in self.agents.iter().flatten().zip(outcomes) {
            self.screen
                .say(&format!("{} (pid {}): {how}", agents.spec.name, agents.pid));
        }
        for service in self.services.iter_mut().rev() {
            let how = service.child.stop(STOP_GRACE).await;
            self.screen.say(&format!(
                "{} (pid {}): {how}",
                service.child.spec.name, service.child.pid
            ));
        }
    }

    /// The agents' reports, as they wrote them.
    fn reports(&self) -> [Option<Report>; 2] {
        let read = |i: usize| -> Option<Report> {
            let text = std::fs::read_to_string(self.report_path(i)).ok()?;
            serde_json::from_str(&text).ok()
        };
        [read(0), read(1)]
    }
}

/// Ctrl-C, SIGTERM, or SIGHUP (the terminal was closed): each stops the lab the same, graceful way.
async fn stop_signal() {
    let hangup = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                hangup.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = lab_core::signal::shutdown() => {}
        () = hangup => {}
    }
}

fn strings(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A port that is free now, for the private Redis.
fn lab_free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}
