//! Test harness: start the whole gateway on port 0 against a fresh database (a SQLite file or a
//! new PostgreSQL database) with the built-in emulator, and wait on conditions with deadlines.
#![allow(dead_code)]

pub mod browser;
pub mod skip;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wa_gateway::app::Gateway;
use wa_gateway::emulator::EmulatorHandle;

pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
pub const PNID: &str = "106540352242922";
pub const PNID2: &str = "106540352242933";
pub const WABA: &str = "102290129340398";
pub const WABA2: &str = "102290129340399";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test; dropped with the test (PostgreSQL databases are left
/// for inspection only when the test fails, since drop runs on success and panic alike).
pub struct Storage {
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database made for the test (dropped with it).
    pub pg_name: Option<String>,
}

/// The PostgreSQL server the tests use, as its superuser (`WA_GATEWAY_TEST_PG`).
pub fn pg_admin_url() -> String {
    std::env::var("WA_GATEWAY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

static PG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh database, or `None` when PostgreSQL is not reachable and the run allows a skip
/// (`skip::missing`: under `.ci/test`, outside CI).
pub async fn storage(db: Db) -> Option<Storage> {
    let dir = tempfile::tempdir().expect("temp dir");
    match db {
        Db::Sqlite => Some(Storage {
            url: format!("sqlite://{}", dir.path().join("gateway.db").display()),
            dir,
            pg_name: None,
        }),
        Db::Postgres => {
            use sqlx::Connection;
            let admin = pg_admin_url();
            let mut conn = match sqlx::PgConnection::connect(&admin).await {
                Ok(c) => c,
                Err(e) => {
                    skip::missing(
                        "PostgreSQL",
                        &format!("not reachable at {admin}: {e}"),
                        "Start it with `pg_ctlcluster 15 main start` or set WA_GATEWAY_TEST_PG",
                    );
                    return None;
                }
            };
            let name = format!(
                "wagw_test_{}_{}_{}",
                std::process::id(),
                PG_COUNTER.fetch_add(1, Ordering::SeqCst),
                rand::random::<u32>()
            );
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            Some(Storage {
                url: format!("{base}/{name}"),
                dir,
                pg_name: Some(name),
            })
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            // Drop from a plain thread: Drop may run inside or outside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// What a test may change in the generated config.
#[derive(Clone)]
pub struct Options {
    /// YAML for the `agents:` mapping (indented by 2).
    pub agents: String,
    /// Extra YAML appended at top level (e.g. `policies:`).
    pub extra: String,
    /// Whether to declare a second number (PNID2, agent `echo`).
    pub second_number: bool,
    pub busy_timeout: &'static str,
    /// Where the in-process emulator listens (`127.0.0.1:0` picks a port).
    pub emulator_listen: String,
    /// Extra YAML inside `storage:` (indented by 2), e.g. `  retention: { messages: 2s }\n`.
    pub storage_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            agents: "  echo: { kind: echo, prefix: \"echo: \" }\n".into(),
            extra: "policies:\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }\n".into(),
            second_number: false,
            busy_timeout: "5s",
            emulator_listen: "127.0.0.1:0".into(),
            storage_extra: String::new(),
        }
    }
}

/// The YAML of a test config.
pub fn config_yaml(storage_url: &str, opts: &Options, agent_of_first: &str) -> String {
    let mut y = format!(
        r#"version: 1
listen:
  webhook: 127.0.0.1:0
  admin: 127.0.0.1:0
public_url: http://127.0.0.1:8080/webhook
storage:
  url: "{storage_url}"
  busy_timeout: {busy}
{storage_extra}meta:
  graph_url: emulator
  app_id: "1000000000000001"
  app_secret: {{ value: {APP_SECRET} }}
  verify_token: {{ value: {VERIFY_TOKEN} }}
  emulator: {{ listen: "{emu_listen}" }}
agents:
{agents}numbers:
  - phone_number_id: "{PNID}"
    waba_id: "{WABA}"
    display_name: Test One
    agent: {agent_of_first}
    access_token: {{ value: token-one }}
"#,
        busy = opts.busy_timeout,
        storage_extra = opts.storage_extra,
        agents = opts.agents,
        emu_listen = opts.emulator_listen,
    );
    if opts.second_number {
        y.push_str(&format!(
            "  - phone_number_id: \"{PNID2}\"\n    waba_id: \"{WABA2}\"\n    display_name: Test Two\n    agent: echo\n    access_token: {{ value: token-two }}\n"
        ));
    }
    y.push_str(&opts.extra);
    y
}

/// A gateway under test with its emulator and database.
pub struct TestGateway {
    pub config_path: std::path::PathBuf,
    pub gw: Option<Gateway>,
    pub emu: EmulatorHandle,
    pub storage: Storage,
    pub http: reqwest::Client,
}

impl TestGateway {
    pub fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("gateway running")
    }

    pub fn webhook_url(&self) -> String {
        self.gw().webhook_url()
    }

    /// Signs and POSTs `body` to the webhook, returning the HTTP status.
    pub async fn post_signed(&self, body: &[u8]) -> u16 {
        let sig = wa_gateway::cloudapi::signature::sign(APP_SECRET.as_bytes(), body);
        self.http
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body.to_vec())
            .send()
            .await
            .expect("webhook POST")
            .status()
            .as_u16()
    }

    /// Counts rows in a table through the gateway's own store connection.
    pub async fn count(&self, sql: &str) -> i64 {
        count(&self.storage.url, sql).await
    }

    /// One text value from the database.
    pub async fn scalar(&self, sql: &str) -> String {
        scalar(&self.storage.url, sql).await
    }

    /// Stops the gateway and starts it again on the same config and database (the in-process
    /// emulator starts afresh).
    pub async fn restart(&mut self) {
        self.stop().await;
        let gw = Gateway::start_from(&self.config_path)
            .await
            .expect("gateway restarts");
        self.emu = gw.emulator.clone().expect("in-process emulator");
        self.gw = Some(gw);
    }

    /// Rewrites the config file with `edit` applied and reloads it now (as SIGHUP would).
    pub async fn reload_with(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).expect("config readable");
        std::fs::write(&self.config_path, edit(text)).expect("config writable");
        match self.gw().reload_now().await {
            wa_gateway::app::ReloadOutcome::Applied { .. } => {}
            other => panic!("reload not applied: {other:?}"),
        }
    }

    /// Waits until `sql` (a COUNT) on the gateway's database gives `n`, for at most `timeout`.
    pub async fn wait_count(&self, sql: &str, n: i64, timeout: Duration) -> bool {
        let url = self.storage.url.clone();
        wait_until(timeout, || async { count(&url, sql).await == n }).await
    }

    /// The admin listener's /metrics text.
    pub async fn metrics(&self) -> String {
        scrape_metrics(&self.http, &format!("http://{}", self.gw().admin_addr)).await
    }

    /// Replies the emulator accepted for customer `to`, as text.
    pub fn texts_to(&self, to: &str) -> Vec<String> {
        self.emu
            .sent()
            .into_iter()
            .filter(|m| m.to == to)
            .filter_map(|m| m.text)
            .collect()
    }

    pub async fn stop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown(Duration::from_secs(10)).await;
        }
    }
}

/// The /metrics text of the admin listener at `admin` (`http://host:port`).
pub async fn scrape_metrics(http: &reqwest::Client, admin: &str) -> String {
    http.get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("metrics scrape")
        .text()
        .await
        .expect("metrics text")
}

/// Runs a scalar COUNT query on a database by URL.
pub async fn count(url: &str, sql: &str) -> i64 {
    scalar(url, sql).await
}

/// Runs a query for one value on a database by URL.
pub async fn scalar<T>(url: &str, sql: &str) -> T
where
    T: Send
        + Unpin
        + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>,
{
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url)
            .await
            .expect("sqlite connect");
        sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql)
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("pg connect");
        sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql)
    }
}

/// Options whose agent `gpt` is an `openai` agent of the in-process emulator's deterministic
/// LLM, with `fields` (`model: m, tools: [buttons]`), and the emulator on a port of its own.
pub fn emulated_llm_options(fields: &str) -> Options {
    let port = free_port();
    Options {
        agents: format!(
            "  gpt: {{ kind: openai, url: \"http://127.0.0.1:{port}/v1\", {fields} }}\n  echo: {{ kind: echo }}\n"
        ),
        emulator_listen: format!("127.0.0.1:{port}"),
        ..Options::default()
    }
}

/// Starts a gateway on `db` with `opts`; `None` when the database is skipped.
pub async fn spawn_gateway(db: Db, opts: Options) -> Option<TestGateway> {
    spawn_gateway_with_agent(db, opts, "echo").await
}

/// As `spawn_gateway`, with the first number answered by `agent`.
pub async fn spawn_gateway_with_agent(db: Db, opts: Options, agent: &str) -> Option<TestGateway> {
    let storage = storage(db).await?;
    let yaml = config_yaml(&storage.url, &opts, agent);
    let path = storage.dir.path().join("gateway.yaml");
    std::fs::write(&path, &yaml).expect("write config");
    let cfg = wa_gateway::config::load(&path)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
    let gw = Gateway::start(cfg).await.expect("gateway starts");
    let emu = gw.emulator.clone().expect("in-process emulator");
    Some(TestGateway {
        config_path: path,
        gw: Some(gw),
        emu,
        storage,
        http: reqwest::Client::new(),
    })
}

/// As `spawn_gateway`, with the first number answered by a fresh [`RecordingAgent`] (`rec`).
pub async fn spawn_gateway_with_recorder(db: Db) -> Option<(RecordingAgent, TestGateway)> {
    let rec = RecordingAgent::start().await;
    let opts = Options {
        agents: rec.agents_yaml(),
        ..Options::default()
    };
    let t = spawn_gateway_with_agent(db, opts, "rec").await?;
    Some((rec, t))
}

/// Starts the gateway from the config file at `path` with its watcher, as `serve` runs it.
pub async fn start_from_file(storage: Storage, path: std::path::PathBuf) -> TestGateway {
    let gw = Gateway::start_from(&path).await.expect("gateway starts");
    TestGateway {
        config_path: path,
        emu: gw.emulator.clone().expect("in-process emulator"),
        gw: Some(gw),
        storage,
        http: reqwest::Client::new(),
    }
}

/// A gateway whose first number is answered by `agent`, whose admin listener has a fixed port
/// and takes `token` (so the CLI finds it), and whose replies are given up after two failed
/// send attempts.
pub async fn spawn_retrying(
    db: Db,
    opts: Options,
    agent: &str,
    token: &str,
) -> Option<TestGateway> {
    let storage = storage(db).await?;
    let opts = Options {
        extra: opts
            .extra
            .replace("settle_grace: 2s }", "settle_grace: 2s, max_attempts: 2 }"),
        ..opts
    };
    let port = free_port();
    let yaml = config_yaml(&storage.url, &opts, agent).replace(
        "  admin: 127.0.0.1:0\n",
        &format!("  admin: 127.0.0.1:{port}\n  admin_token: {{ value: {token} }}\n"),
    );
    Some(start_from_yaml(storage, &yaml).await)
}

/// Writes `yaml` as `gateway.yaml` in the test's directory and starts the gateway from it.
pub async fn start_from_yaml(storage: Storage, yaml: &str) -> TestGateway {
    let path = storage.dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write config");
    start_from_file(storage, path).await
}

/// The emulated Meta app the tests share: app `1000000000000001` with [`APP_SECRET`] and
/// [`VERIFY_TOKEN`], owning number [`PNID`] (token `token-one`); the rest as the emulator's default.
pub fn emulator_config() -> wa_gateway::emulator::EmulatorConfig {
    wa_gateway::emulator::EmulatorConfig {
        app_id: "1000000000000001".into(),
        app_secret: APP_SECRET.into(),
        verify_token: VERIFY_TOKEN.into(),
        numbers: vec![emulator_number(PNID)],
        ..wa_gateway::emulator::EmulatorConfig::default()
    }
}

/// Number `pnid` of WABA [`WABA`] as the emulator owns it, with token `token-one`.
pub fn emulator_number(pnid: &str) -> wa_gateway::emulator::EmulatorNumber {
    wa_gateway::emulator::EmulatorNumber {
        phone_number_id: pnid.into(),
        waba_id: WABA.into(),
        display_phone_number: "15550001111".into(),
        access_token: "token-one".into(),
    }
}

/// Starts a Cloud API emulator of its own (it outlives gateway restarts) on a free port.
pub async fn start_emulator(cfg: wa_gateway::emulator::EmulatorConfig) -> EmulatorHandle {
    wa_gateway::emulator::start(
        cfg,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// Writes the secret files of [`emulator_config`] into `dir`: `app_secret`, `verify_token` and
/// `token`, the files a [`StandaloneConfig`] reads.
pub fn write_secret_files(dir: &std::path::Path) {
    for (name, value) in [
        ("app_secret", APP_SECRET),
        ("verify_token", VERIFY_TOKEN),
        ("token", "token-one"),
    ] {
        std::fs::write(dir.join(name), value).unwrap();
    }
}

/// A Cloud API emulator of its own (it outlives gateway restarts) serving number `PNID` with
/// token `token-one`, redelivering webhooks after 50 ms, then up to every `retry_max`; and
/// the secret files `app_secret`, `verify_token` and `token` written into `dir`.
pub async fn standalone_emulator(dir: &std::path::Path, retry_max: Duration) -> EmulatorHandle {
    let emu = start_emulator(wa_gateway::emulator::EmulatorConfig {
        webhook_url: None,
        statuses: true,
        retry_initial: Duration::from_millis(50),
        retry_max,
        ..emulator_config()
    })
    .await;
    write_secret_files(dir);
    emu
}

/// The config of a gateway calling a standalone emulator at `graph` (not the built-in one), its
/// secrets read from files in `dir` (see [`write_secret_files`]): the one place that YAML is
/// written. By default it listens on port 0, declares the echo agent and number [`PNID`]
/// answered by it; each method changes one part.
#[derive(Clone)]
pub struct StandaloneConfig {
    dir: std::path::PathBuf,
    storage_url: String,
    graph: String,
    webhook_port: Option<u16>,
    admin: String,
    listen_extra: String,
    storage_extra: String,
    verify_token_file: String,
    meta: String,
    agents: String,
    agent: String,
    access_token: String,
    number_extra: String,
    numbers: Option<String>,
    extra: String,
}

impl StandaloneConfig {
    pub fn new(dir: &std::path::Path, storage_url: &str, graph: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            storage_url: storage_url.to_owned(),
            graph: graph.to_owned(),
            webhook_port: None,
            admin: "127.0.0.1:0".into(),
            listen_extra: String::new(),
            storage_extra: String::new(),
            verify_token_file: "verify_token".into(),
            meta: String::new(),
            agents: "  echo: { kind: echo, prefix: \"echo: \" }\n".into(),
            agent: "echo".into(),
            access_token: format!("{{ file: {}/token }}", dir.display()),
            number_extra: String::new(),
            numbers: None,
            extra: String::new(),
        }
    }

    /// Webhooks on this port, which `public_url` names (otherwise port 0 behind :8080).
    pub fn webhook_port(mut self, port: u16) -> Self {
        self.webhook_port = Some(port);
        self
    }

    /// The admin listener's `host:port`.
    pub fn admin(mut self, addr: &str) -> Self {
        self.admin = addr.to_owned();
        self
    }

    /// More of the `listen:` mapping, e.g. `, shutdown_delay: 2s`.
    pub fn listen_extra(mut self, yaml: &str) -> Self {
        self.listen_extra.push_str(yaml);
        self
    }

    /// The admin token read from the file `admin_token` in the directory.
    pub fn admin_token_file(self) -> Self {
        let yaml = format!(
            ", admin_token: {{ file: {}/admin_token }}",
            self.dir.display()
        );
        self.listen_extra(&yaml)
    }

    /// More of the `storage:` mapping, e.g. `, lease: 2s`.
    pub fn storage_extra(mut self, yaml: &str) -> Self {
        self.storage_extra.push_str(yaml);
        self
    }

    /// The verify token from this file of the directory instead of `verify_token`.
    pub fn verify_token_file(mut self, name: &str) -> Self {
        self.verify_token_file = name.to_owned();
        self
    }

    /// Lines under `meta:` after the secrets (indented by 2).
    pub fn meta(mut self, lines: &str) -> Self {
        self.meta.push_str(lines);
        self
    }

    /// The `agents:` mapping's lines (indented by 2) instead of the echo agent.
    pub fn agents(mut self, lines: &str) -> Self {
        self.agents = lines.to_owned();
        self
    }

    /// The agent answering [`PNID`] instead of `echo`.
    pub fn agent(mut self, name: &str) -> Self {
        self.agent = name.to_owned();
        self
    }

    /// [`PNID`]'s `access_token` instead of the file `token`.
    pub fn access_token(mut self, yaml: &str) -> Self {
        self.access_token = yaml.to_owned();
        self
    }

    /// More keys of [`PNID`]'s mapping, e.g. `, display_name: Acme`.
    pub fn number_extra(mut self, yaml: &str) -> Self {
        self.number_extra.push_str(yaml);
        self
    }

    /// The whole `numbers:` block (key included) instead of [`PNID`] alone.
    pub fn numbers(mut self, block: &str) -> Self {
        self.numbers = Some(block.to_owned());
        self
    }

    /// Top-level YAML after the numbers (e.g. `policies:`).
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    /// The config's text.
    pub fn yaml(&self) -> String {
        let d = self.dir.display();
        let (webhook, public) = match self.webhook_port {
            Some(port) => (port, port),
            None => (0, 8080),
        };
        let numbers = self.numbers.clone().unwrap_or_else(|| {
            format!(
                "numbers:\n  - {{ phone_number_id: \"{PNID}\", waba_id: \"{WABA}\", agent: {}, access_token: {}{} }}\n",
                self.agent, self.access_token, self.number_extra
            )
        });
        format!(
            "version: 1\n\
             listen: {{ webhook: \"127.0.0.1:{webhook}\", admin: \"{admin}\"{listen_extra} }}\n\
             public_url: http://127.0.0.1:{public}/webhook\n\
             storage: {{ url: \"{storage}\"{storage_extra} }}\n\
             meta:\n\
             \x20 graph_url: {graph}\n\
             \x20 app_id: \"1000000000000001\"\n\
             \x20 app_secret: {{ file: {d}/app_secret }}\n\
             \x20 verify_token: {{ file: {d}/{verify_token} }}\n\
             {meta}\
             agents:\n\
             {agents}\
             {numbers}\
             {extra}",
            admin = self.admin,
            listen_extra = self.listen_extra,
            storage = self.storage_url,
            storage_extra = self.storage_extra,
            graph = self.graph,
            verify_token = self.verify_token_file,
            meta = self.meta,
            agents = self.agents,
            extra = self.extra,
        )
    }

    /// Writes the config as `name` in the directory; its path.
    pub fn write(&self, name: &str) -> std::path::PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, self.yaml()).expect("write config");
        path
    }
}

/// A port free on 127.0.0.1 right now, for a listener the test starts later. It is taken below
/// the kernel's range of ephemeral ports (32768–60999 on Linux): a port from that range, free
/// when asked, could meanwhile become the local port of any outgoing connection of the tests
/// running beside this one, and the gateway's bind then fails with "address in use". Each call
/// of a process returns another port, starting at a place of its own per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOW} and {}", LOW + SPAN)
}

/// Waits until `cond` holds, checking every 20 ms, for at most `timeout`. Returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a scripted agent answers: HTTP status and JSON body.
pub type Script = Arc<dyn Fn(&serde_json::Value) -> (u16, serde_json::Value) + Send + Sync>;

/// A recording `http` agent: answers `re: <text>` (or as scripted) and remembers every call.
#[derive(Clone)]
pub struct RecordingAgent {
    pub calls: Arc<Mutex<Vec<serde_json::Value>>>,
    pub url: String,
}

impl RecordingAgent {
    pub async fn start() -> Self {
        Self::scripted(Arc::new(|turn: &serde_json::Value| {
            let text = turn["message"]["text"].as_str().unwrap_or_default();
            (200, serde_json::json!({ "reply": format!("re: {text}") }))
        }))
        .await
    }

    /// An agent answering with `script`.
    pub async fn scripted(script: Script) -> Self {
        use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
        type Shared = (Arc<Mutex<Vec<serde_json::Value>>>, Script);
        let calls: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        async fn handle(
            State((calls, script)): State<Shared>,
            Json(turn): Json<serde_json::Value>,
        ) -> (StatusCode, Json<serde_json::Value>) {
            let (status, body) = script(&turn);
            calls.lock().unwrap().push(turn);
            (StatusCode::from_u16(status).unwrap(), Json(body))
        }
        let app = Router::new()
            .route("/reply", post(handle))
            .with_state((calls.clone(), script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            calls,
            url: format!("http://{addr}/reply"),
        }
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn calls(&self) -> Vec<serde_json::Value> {
        self.calls.lock().unwrap().clone()
    }

    /// The `agents:` YAML declaring this agent as `rec` (and `echo` for other numbers).
    pub fn agents_yaml(&self) -> String {
        format!(
            "  rec: {{ kind: http, url: \"{}\", timeout: 5s }}\n  echo: {{ kind: echo, prefix: \"echo: \" }}\n",
            self.url
        )
    }
}

/// Declares one test per database for an async test body `fn(Db)`.
#[macro_export]
macro_rules! on_both_dbs {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Db::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Db::Postgres).await }
            )*
        }
    };
}

/// A Cloud API `messages` envelope: one entry per `(waba_id, phone_number_id, messages)` with
/// messages as `(from, wamid, text)`.
pub type EntrySpec<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str, &'a str)>);

/// See [`EntrySpec`]: `(waba_id, phone_number_id, [(from, wamid, text)])`.
pub fn text_envelope(entries: &[EntrySpec<'_>]) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    text_envelope_at(now, entries)
}

/// As [`text_envelope`], with Meta's `timestamp` set to `ts` (Unix seconds).
pub fn text_envelope_at(ts: i64, entries: &[EntrySpec<'_>]) -> serde_json::Value {
    let ts = ts.to_string();
    let entry: Vec<_> = entries
        .iter()
        .map(|(waba, pnid, msgs)| {
            let contacts: Vec<_> = msgs
                .iter()
                .map(|(from, _, _)| serde_json::json!({ "profile": { "name": format!("Customer {from}") }, "wa_id": from }))
                .collect();
            let messages: Vec<_> = msgs
                .iter()
                .map(|(from, id, text)| serde_json::json!({
                    "from": from, "id": id, "timestamp": ts, "type": "text", "text": { "body": text }
                }))
                .collect();
            serde_json::json!({
                "id": waba,
                "changes": [{
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": { "display_phone_number": "15550001111", "phone_number_id": pnid },
                        "contacts": contacts,
                        "messages": messages
                    }
                }]
            })
        })
        .collect();
    serde_json::json!({ "object": "whatsapp_business_account", "entry": entry })
}

/// The gateway binary running as a process of its own (crash and memory tests); killed and
/// reaped when dropped.
pub struct GatewayProcess {
    pub child: std::process::Child,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin serve --config config` with its log (at `level`) appended to `log`, and `env`
/// set in its environment.
pub fn spawn_gateway_binary(
    bin: &std::path::Path,
    config: &std::path::Path,
    log: &std::path::Path,
    level: &str,
    env: &[(&str, &str)],
) -> GatewayProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("WA_GATEWAY_LOG", level)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start wa-gateway");
    GatewayProcess { child }
}

/// Starts `wa-gateway serve` (the real binary) as replica `id` of a cluster, on fresh ports, with
/// `cfg` (its webhook port and admin address are set here) written as `<id>.yaml` in `dir`: the
/// process, its webhook URL, its admin address (`host:port`) and its log file.
pub fn spawn_replica(
    dir: &std::path::Path,
    id: &str,
    cfg: StandaloneConfig,
) -> (GatewayProcess, String, String, std::path::PathBuf) {
    let (webhook_port, admin_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let path = cfg
        .webhook_port(webhook_port)
        .admin(&admin)
        .write(&format!("{id}.yaml"));
    let log = dir.join(format!("{id}.log"));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wa-gateway"));
    let process = spawn_gateway_binary(bin, &path, &log, "info", &[("WA_GATEWAY_REPLICA_ID", id)]);
    let webhook = format!("http://127.0.0.1:{webhook_port}/webhook");
    (process, webhook, admin, log)
}

/// Waits up to `within` for the admin listener at `admin` to answer /readyz with 200.
pub async fn wait_ready(admin: &str, within: Duration) -> bool {
    let http = reqwest::Client::new();
    wait_until(within, || {
        let http = http.clone();
        async move {
            http.get(format!("http://{admin}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await
}

/// Posts one customer text to [`PNID`] at `url`, signed as Meta does; `Err` says why it was not
/// a 200.
pub async fn post_text(
    http: &reqwest::Client,
    url: &str,
    from: &str,
    wamid: &str,
    text: &str,
) -> Result<(), String> {
    let body = serde_json::to_vec(&text_envelope(&[(WABA, PNID, vec![(from, wamid, text)])]))
        .expect("envelope");
    let sig = wa_gateway::cloudapi::signature::sign(APP_SECRET.as_bytes(), &body);
    match http
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
    {
        Ok(r) if r.status().as_u16() == 200 => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(format!("{e}")),
    }
}

/// Prints the end of each process's log if the test fails (the directory goes with it).
pub struct LogsOnFailure(pub Vec<std::path::PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- {} (last 40 lines):\n{tail}", path.display());
        }
    }
}

/// A file a [`MediaServer`] serves.
#[derive(Clone)]
struct Served {
    content_type: String,
    bytes: Vec<u8>,
    /// Requests answered 500 before the file is served.
    fail_first: usize,
}

/// A media host on 127.0.0.1, standing in for the CDN an agent's media URLs point at: serves
/// files by path with a Content-Type, optionally failing first, and counts the requests.
#[derive(Clone)]
pub struct MediaServer {
    base: String,
    files: Arc<Mutex<std::collections::HashMap<String, Served>>>,
    hits: Arc<Mutex<std::collections::HashMap<String, usize>>>,
}

impl MediaServer {
    pub async fn start() -> Self {
        use axum::extract::{Path, State};
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        type Shared = (
            Arc<Mutex<std::collections::HashMap<String, Served>>>,
            Arc<Mutex<std::collections::HashMap<String, usize>>>,
        );
        async fn get(
            State((files, hits)): State<Shared>,
            Path(path): Path<String>,
        ) -> axum::response::Response {
            let n = {
                let mut hits = hits.lock().unwrap();
                let n = hits.entry(path.clone()).or_default();
                *n += 1;
                *n
            };
            let Some(file) = files.lock().unwrap().get(&path).cloned() else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if n <= file.fail_first {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            ([(header::CONTENT_TYPE, file.content_type)], file.bytes).into_response()
        }
        let server = MediaServer {
            base: String::new(),
            files: Arc::default(),
            hits: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::get(get))
            .with_state((server.files.clone(), server.hits.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MediaServer {
            base: format!("http://{addr}"),
            ..server
        }
    }

    /// Serves `bytes` at `path` as `content_type`; the file's URL.
    pub fn serve(&self, path: &str, content_type: &str, bytes: Vec<u8>) -> String {
        self.serve_failing(path, content_type, bytes, 0)
    }

    /// As [`MediaServer::serve`], answering the first `fail_first` requests 500.
    pub fn serve_failing(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
        fail_first: usize,
    ) -> String {
        let file = Served {
            content_type: content_type.to_owned(),
            bytes,
            fail_first,
        };
        self.files.lock().unwrap().insert(path.to_owned(), file);
        format!("{}/{path}", self.base)
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A JPEG's first bytes followed by filler: `len` bytes in all (what the gateway and the
/// emulator check of a JPEG is its magic bytes).
pub fn jpeg(len: usize) -> Vec<u8> {
    let mut b = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01,
    ];
    b.extend((0..len.saturating_sub(12)).map(|i| (i * 31 % 251) as u8));
    b
}

/// Runs `wa-gateway <args> --config <config>` with `stdin` written to its standard input (as
/// `secret put` reads a value).
pub fn cli_with_stdin(
    args: &[&str],
    config: &std::path::Path,
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// POSTs `body` to the admin API of `t` with the bearer `token`: the status and the JSON answer
/// (null when it is not JSON).
pub async fn admin_post(
    t: &TestGateway,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let res = t
        .http
        .post(format!("http://{}{path}", t.gw().admin_addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("admin POST");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// GETs `path` from the admin API of `t` with the bearer `token`: the status and the JSON
/// answer (null when it is not JSON).
pub async fn admin_get(t: &TestGateway, token: &str, path: &str) -> (u16, serde_json::Value) {
    let res = t
        .http
        .get(format!("http://{}{path}", t.gw().admin_addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin GET");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}
