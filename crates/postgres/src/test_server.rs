//! A throwaway PostgreSQL server for tests: a new cluster in a temporary directory, started from
//! the machine's PostgreSQL binaries on a free loopback port, with fsync on. It is stopped, and
//! its directory removed, when the process that started it ends, however it ends: a guard
//! process holds the other end of a pipe and stops the server when the pipe closes.
//!
//! The binaries are found in `EVHOST_POSTGRES_BIN`, else in the newest
//! `/usr/lib/postgresql/*/bin` (Debian's layout). PostgreSQL refuses to run as root, so as root
//! the server runs as the `postgres` user (whose ids it takes before it starts).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running server.
pub struct TestServer {
    pub port: u16,
    /// The directory holding the cluster and its log.
    pub dir: PathBuf,
    /// The postmaster's process id.
    pub pid: u32,
    bin: PathBuf,
    as_root: bool,
    /// The settings the server runs with, for a restart.
    settings: Vec<String>,
    /// How many times the server has started (each start logs to a file of its own).
    starts: u32,
    /// Holds the guard's pipe open while this value (or, for the shared one, the process) lives.
    _guard: Child,
}

/// How a new server's cluster is made.
enum Cluster<'a> {
    /// `initdb`: an empty primary.
    New,
    /// `pg_basebackup` of a running primary: a standby streaming from it, under this name.
    StandbyOf(&'a TestServer, &'a str),
}

impl TestServer {
    /// The server shared by every test of this process, started by the first that asks.
    pub fn shared() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        SERVER.get_or_init(|| TestServer::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// A connection URL for `database` (which must exist: `postgres` always does).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?connect_timeout=10",
            self.port
        )
    }

    /// Starts a new server and waits until it takes connections.
    pub fn start() -> Result<TestServer, String> {
        TestServer::make(Cluster::New)
    }

    /// Starts a standby of `self`, named `name`, and makes it the primary's synchronous
    /// standby: from the moment this returns, every commit on the primary waits for it.
    pub fn start_synchronous_standby(&self, name: &str) -> Result<TestServer, String> {
        let standby = TestServer::make(Cluster::StandbyOf(self, name))?;
        self.psql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{name}'"
        ))?;
        self.psql("SELECT pg_reload_conf()")?;
        let started = Instant::now();
        while self.psql(&format!(
            "SELECT 1 FROM pg_stat_replication WHERE application_name = '{name}' AND sync_state = 'sync'"
        ))? != "1"
        {
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!("{name} never became a synchronous standby"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(standby)
    }

    /// Kills the server at once (SIGKILL), as a crash or a power cut would stop it.
    pub fn kill_9(&self) {
        // SAFETY: kill has no memory preconditions; a process that is gone makes it fail.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGKILL);
        }
    }

    /// Promotes a standby to primary and waits until it takes writes.
    pub fn promote(&self) -> Result<(), String> {
        run(as_postgres(&self.bin.join("pg_ctl"), self.as_root)
            .args(["promote", "-w", "-t", "120", "-D"])
            .arg(self.dir.join("data")))
    }

    /// Runs one SQL statement with psql; answers its output, trimmed.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn make(cluster: Cluster<'_>) -> Result<TestServer, String> {
        let bin = binaries()?;
        let dir = std::env::temp_dir().join(format!(
            "evhost-test-postgres-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            run(Command::new("chown").arg("postgres:").arg(&dir))?;
        }
        let mut settings = vec!["fsync=on".to_owned(), "max_connections=300".to_owned()];
        match cluster {
            Cluster::New => run(as_postgres(&bin.join("initdb"), as_root)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]))?,
            Cluster::StandbyOf(primary, name) => {
                run(as_postgres(&bin.join("pg_basebackup"), as_root)
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-U",
                        "postgres",
                        "-X",
                        "stream",
                        "-R",
                        "-D",
                    ])
                    .arg(&data)
                    .arg("-p")
                    .arg(primary.port.to_string()))?;
                // The walreceiver names itself after the cluster, which the primary's
                // synchronous_standby_names refers to.
                settings.push(format!("cluster_name={name}"));
            }
        }
        let port = free_port()?;
        let log = dir.join("postgres.log");
        let pid = spawn_postgres(&bin, &dir, port, &settings, as_root, &log)?;
        let guard = guard(pid, &dir)?;
        let server = TestServer {
            port,
            dir,
            pid,
            bin,
            as_root,
            settings,
            starts: 1,
            _guard: guard,
        };
        server.wait_ready(&log)?;
        Ok(server)
    }

    /// Stops the server with a fast shutdown, which cuts every connection as an operator's
    /// restart does, and starts it again on the same port and data once it has stopped.
    pub fn restart(&mut self) -> Result<(), String> {
        // SAFETY: kill has no memory preconditions.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGINT);
        }
        // The postmaster removes its pid file as the last step of a clean shutdown.
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let started = Instant::now();
        while pid_file.exists() {
            if started.elapsed() > Duration::from_secs(120) {
                return Err("PostgreSQL did not stop within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.starts += 1;
        let log = self.dir.join(format!("postgres-{}.log", self.starts));
        self.pid = spawn_postgres(
            &self.bin,
            &self.dir,
            self.port,
            &self.settings,
            self.as_root,
            &log,
        )?;
        self.wait_ready(&log)
    }

    fn wait_ready(&self, log: &Path) -> Result<(), String> {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || !std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("ready to accept")
        {
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!(
                    "PostgreSQL did not start; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Starts the postmaster of the cluster in `dir` on `port`, logging to `log`; answers its pid.
fn spawn_postgres(
    bin: &Path,
    dir: &Path,
    port: u16,
    settings: &[String],
    as_root: bool,
    log: &Path,
) -> Result<u32, String> {
    let mut command = as_postgres(&bin.join("postgres"), as_root);
    command
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg("listen_addresses=127.0.0.1")
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()));
    for setting in settings {
        command.arg("-c").arg(setting);
    }
    let server = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?)
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    Ok(server.id())
}

/// The directory of the PostgreSQL server's binaries.
pub fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("EVHOST_POSTGRES_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server binaries: install Debian's postgresql package (scripts/test.sh \
         does) or set EVHOST_POSTGRES_BIN"
            .to_owned()
    })
}

/// A command that runs `program` as the `postgres` user when this process is root.
pub fn as_postgres(program: &Path, as_root: bool) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    if as_root && let Some((uid, gid)) = postgres_user() {
        command.uid(uid).gid(gid);
    }
    command
}

/// The ids of the `postgres` user.
fn postgres_user() -> Option<(u32, u32)> {
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer into static storage or null; it is read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null, so it points to a valid passwd record.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// A loopback port nothing listens on now.
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free port: {e}"))?;
    Ok(listener
        .local_addr()
        .map_err(|e| format!("a free port: {e}"))?
        .port())
}

/// A shell that waits for its input to close (when this process ends), then stops the server
/// (a fast shutdown, then a kill if it lingers) and removes `dir`.
fn guard(pid: u32, dir: &Path) -> Result<Child, String> {
    // A restarted server has a postmaster of another pid: its pid file names it.
    let script = format!(
        "read _ignored; pids=\"{pid} $(head -n 1 '{dir}/data/postmaster.pid' 2>/dev/null)\"; \
         kill -INT $pids 2>/dev/null; \
         for p in $pids; do \
           i=0; while kill -0 $p 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
           kill -KILL $p 2>/dev/null; \
         done; rm -rf '{dir}'",
        dir = dir.display()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the server's guard: {e}"))
}
