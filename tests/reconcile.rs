//! The reconciler against a standalone emulator (a fresh Meta app) with a real gateway behind
//! `public_url`, so Meta's verification GET reaches the gateway's /webhook: plan, apply, plan
//! again, refusals explained, and number status following token expiry.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wa_gateway::app::Gateway;
use wa_gateway::config;
use wa_gateway::emulator::EmulatorHandle;
use wa_gateway::graph::GraphClient;
use wa_gateway::reconcile::{self, Desired, NumberState, Op};

const TOKEN: &str = "token-one";
const PIN: &str = "123456";

struct Env {
    emu: EmulatorHandle,
    dir: tempfile::TempDir,
    webhook_port: u16,
    client: GraphClient,
}

impl Env {
    /// Writes a config whose secrets come from files named by the arguments; returns its path.
    fn config(&self, name: &str, verify_token_file: &str, pin_file: &str) -> PathBuf {
        let d = self.dir.path().display();
        StandaloneConfig::new(
            self.dir.path(),
            &format!("sqlite://{d}/gateway.db"),
            &self.emu.url(),
        )
        .webhook_port(self.webhook_port)
        .verify_token_file(verify_token_file)
        // The test drives plan and apply itself; the gateway's loop only watches.
        .meta("  reconcile: { apply: false }\n")
        .agents("  echo: { kind: echo }\n")
        .number_extra(&format!(
            ", display_name: Acme, pin: {{ file: {d}/{pin_file} }}"
        ))
        .write(name)
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.path().join(file), value).unwrap();
    }
}

fn desired(path: &Path) -> Desired {
    Desired::from_config(&config::load(path).expect("config loads"))
}

async fn plan_ops(env: &Env, d: &Desired) -> Vec<Op> {
    let observed = reconcile::observe(&env.client, d).await;
    assert!(observed.failures().is_empty(), "{:?}", observed.failures());
    reconcile::plan(d, &observed)
        .into_iter()
        .map(|a| a.op)
        .collect()
}

async fn start() -> (Env, Gateway) {
    let emu = start_emulator(emulator_config()).await;
    let client = GraphClient::new(&emu.url(), "v23.0", Duration::from_secs(10));
    let env = Env {
        emu,
        dir: tempfile::tempdir().unwrap(),
        webhook_port: free_port(),
        client,
    };
    write_secret_files(env.dir.path());
    for (file, value) in [
        ("wrong_verify_token", "not-the-gateways-token"),
        ("pin", PIN),
        ("wrong_pin", "654321"),
    ] {
        env.write(file, value);
    }
    let path = env.config("gateway.yaml", "verify_token", "pin");
    let gateway = Gateway::start(config::load(&path).unwrap()).await.unwrap();
    (env, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_converge_and_explain_refusals() {
    let (env, gateway) = start().await;
    let good = env.config("gateway.yaml", "verify_token", "pin");
    let d = desired(&good);

    let fresh = plan_ops(&env, &d).await;
    assert!(matches!(fresh[0], Op::SubscribeApp { .. }), "{fresh:?}");
    assert!(fresh.contains(&Op::SubscribeWaba {
        waba_id: WABA.into(),
        override_callback: None
    }));
    assert!(fresh.contains(&Op::Register {
        phone_number_id: PNID.into()
    }));

    // Meta's handshake reaches the gateway, which refuses a token it does not hold.
    let wrong = desired(&env.config("wrong.yaml", "wrong_verify_token", "pin"));
    let actions = reconcile::plan(&wrong, &reconcile::observe(&env.client, &wrong).await);
    let err = reconcile::apply(&env.client, &wrong, actions)
        .await
        .unwrap_err();
    assert_eq!(err.code, Some(2200), "{err}");
    let url = format!("http://127.0.0.1:{}/webhook", env.webhook_port);
    assert!(
        err.advice.contains(&format!("Meta could not verify {url}"))
            && err.advice.contains("meta.verify_token matches"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("not-the-gateways-token"),
        "no secret in errors"
    );

    let actions = reconcile::plan(&d, &reconcile::observe(&env.client, &d).await);
    let done = reconcile::apply(&env.client, &d, actions)
        .await
        .expect("apply");
    assert_eq!(done.len(), 3, "{done:?}");
    assert!(plan_ops(&env, &d).await.is_empty(), "converged");
    assert!(env.emu.is_registered(PNID));
    assert_eq!(env.emu.app_callback_url(), Some(url));
    assert_eq!(
        env.emu.app_fields(),
        ["messages", "smb_message_echoes"],
        "customer messages, and the Business app's echoes (coexistence)"
    );

    // The binary agrees: exit 0 when nothing is to do (it blocks this thread; the emulator
    // and gateway run on the other worker).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["plan", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A wrong PIN, once a PIN is set, is refused with the documented advice.
    env.client.deregister(PNID, TOKEN).await.unwrap();
    let bad_pin = desired(&env.config("badpin.yaml", "verify_token", "wrong_pin"));
    let actions = reconcile::plan(&bad_pin, &reconcile::observe(&env.client, &bad_pin).await);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let err = reconcile::apply(&env.client, &bad_pin, actions)
        .await
        .unwrap_err();
    assert_eq!(err.code, Some(133005), "{err}");
    assert!(err.advice.contains("numbers[0].pin"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["plan", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "pending: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let actions = reconcile::plan(&d, &reconcile::observe(&env.client, &d).await);
    reconcile::apply(&env.client, &d, actions)
        .await
        .expect("right PIN");

    // Status follows the token: Error when it expires, Active once the file has a valid one.
    let statuses = reconcile::statuses(&env.client, &d, &[]).await;
    assert_eq!(statuses[0].status, NumberState::Active, "{statuses:?}");
    assert_eq!(statuses[0].verified_name.as_deref(), Some("Test Number"));
    assert!(env.emu.expire_token(TOKEN));
    let expired = reconcile::statuses(&env.client, &desired(&good), &statuses).await;
    assert_eq!(expired[0].status, NumberState::Error);
    assert!(
        expired[0].reason.as_deref().unwrap_or("").contains("(190)"),
        "{expired:?}"
    );
    env.write("token", &env.emu.issue_token(PNID).unwrap());
    let back = reconcile::statuses(&env.client, &desired(&good), &expired).await;
    assert_eq!(back[0].status, NumberState::Active, "{back:?}");

    let metrics = wa_gateway::metrics::Metrics::new();
    reconcile::record_metrics(
        &metrics,
        back.iter().map(|s| (s.phone_number_id.as_str(), s.status)),
    );
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "wa_gateway_number_status{{phone_number_id=\"{PNID}\",status=\"active\"}} 1"
        )),
        "{text}"
    );
    gateway.shutdown(Duration::from_secs(5)).await;
}
