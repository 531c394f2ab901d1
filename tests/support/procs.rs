//! Gateway processes (the real binary) on a simulator and a shared Redis, and a private
//! Redis Cluster for the tests that need one.

use connect_chat_gateway::pb::chat_gateway_client::ChatGatewayClient;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The sealing key every test replica shares (never a production key).
pub const STORE_KEYS: &str = "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The shared Redis the machine runs.
pub const REDIS: &str = "redis://127.0.0.1:6379/0";

/// A key prefix no other test run uses.
pub fn unique_prefix(what: &str) -> String {
    format!(
        "ccg-{what}-{}-{:08x}:",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A gateway process on the simulator at `sim`.
pub struct GatewayProc {
    child: Child,
    pub addr: String,
    /// The admin endpoint (metrics, health).
    pub admin: std::net::SocketAddr,
}

impl GatewayProc {
    /// Spawns the gateway with Redis store `store` under `prefix`, plus `extra` flags.
    pub fn spawn(sim: &str, store: &str, prefix: &str, extra: &[&str]) -> Self {
        Self::spawn_with_env(sim, store, prefix, extra, &[])
    }

    /// [`GatewayProc::spawn`] with environment variables `env` set.
    pub fn spawn_with_env(
        sim: &str,
        store: &str,
        prefix: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_connect-chat-gateway"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--endpoint-url", sim, "--static-credentials"])
            .args(["--instance-id", "i-1", "--contact-flow-id", "f-1"])
            .args(["--store", store, "--store-prefix", prefix])
            .args(["--store-keys", STORE_KEYS])
            .args(["--drain-grace", "5s", "--heartbeat-interval", "1s"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("CCG_TEST_GATEWAY_LOGS").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the gateway binary starts");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let mut admin = None;
        let addr = loop {
            let line = lines
                .next()
                .expect("the gateway logs its address")
                .expect("log line");
            if let Some(rest) = line.split("admin endpoint on http://").nth(1) {
                admin = rest.split('/').next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.split("gateway on ").nth(1) {
                break rest.split([',', ' ']).next().unwrap_or("").to_owned();
            }
        };
        // Keep draining its logs so it never blocks on a full pipe; warnings and errors go
        // to the test's output (shown when a test fails).
        let debug = std::env::var_os("CCG_TEST_GATEWAY_LOGS").is_some();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if debug || line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("[gateway] {line}");
                }
            }
        });
        Self {
            child,
            addr,
            admin: admin.expect("the gateway logs its admin address"),
        }
    }

    pub async fn client(&self) -> ChatGatewayClient<tonic::transport::Channel> {
        ChatGatewayClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM: the graceful drain.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL: the process dies with its leases held.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    pub fn wait_exit(mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private three-master Redis Cluster (`redis-server --cluster-enabled yes`) in a
/// temporary directory, stopped on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ccg-redis-cluster-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        // Each node also listens on its port + 10000 (the cluster bus): both below the
        // loopback ephemeral range (32768 and up), both free now.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = rand::random_range(12000..22000u16);
            let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
            if !ports.contains(&p) && free(p) && free(p + 10000) {
                ports.push(p);
            }
        }
        let nodes = ports
            .iter()
            .map(|p| {
                Command::new("redis-server")
                    .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{p}.conf")])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server is installed")
            })
            .collect();
        let cluster = Self { nodes, ports, dir };
        for p in &cluster.ports {
            cluster.wait_cli(*p, &["PING"], "PONG").await;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(created.success(), "redis-cli --cluster create failed");
        for p in &cluster.ports {
            cluster
                .wait_cli(*p, &["CLUSTER", "INFO"], "cluster_state:ok")
                .await;
        }
        cluster
    }

    async fn wait_cli(&self, port: u16, args: &[&str], expect: &str) {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(args)
                .output()
                .expect("redis-cli is installed");
            if String::from_utf8_lossy(&out.stdout).contains(expect) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Redis on {port} did not answer {expect}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `--store` value: every node, comma-separated.
    pub fn store_url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on now (below the ephemeral range, so that no client
/// socket takes it meanwhile).
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20000..32000u16);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A private Redis server on `port`, stopped on drop (or by [`RedisServer::stop`]).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Self {
            child: Some(child),
            port,
        };
        let deadline = tokio::time::Instant::now() + super::WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
