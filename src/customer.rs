//! Erasing a customer on request (GDPR Art. 17): the `customer erase` command, which opens
//! storage directly like the other storage commands, and the erasure a running gateway performs
//! for the admin API (through its writer, keeping its in-memory opt-outs and pauses in step).

use crate::serve::state::AppState;
use crate::store::{CustomerId, ERASE_PASSES, Erased, ErasureKey, Op, Store, StoreError};

/// Arguments of `wa-gateway customer`.
#[derive(clap::Args, Debug)]
pub struct CustomerArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigFile,
    #[command(subcommand)]
    pub command: CustomerCommand,
}

/// What can be done about one customer.
#[derive(clap::Subcommand, Debug)]
pub enum CustomerCommand {
    /// Delete every stored row of a customer on every number (messages, replies, statuses,
    /// history, conversations, pacing state) and print the counts per table. A customer who
    /// opted out stays opted out, under a keyed digest of their id.
    Erase {
        /// The customer's wa_id (digits) or business-scoped user id (BSUID, e.g. US.1349…).
        id: String,
    },
}

/// `wa-gateway customer …`: 0 when done.
pub async fn run(args: CustomerArgs) -> anyhow::Result<u8> {
    match args.command {
        CustomerCommand::Erase { id } => {
            let id = CustomerId::parse(&id)?;
            let config = crate::secrets::load_resolved(&args.config.config).await?;
            let store = Store::connect_for_command(&config.storage)
                .await
                .map_err(|e| anyhow::anyhow!("opening storage: {e}"))?;
            let key = ErasureKey::derive(config.meta.app_secret.expose().as_bytes());
            let erased = erase_directly(&store, &id, &key).await;
            // The customer's id is what the erasure removes: the log keeps no copy of it.
            let entry = crate::audit::entry(
                crate::audit::CLI,
                crate::audit::AuditAction::CustomerErase,
                None,
            );
            let ended = match &erased {
                Ok(e) => crate::audit::ended(
                    entry,
                    crate::audit::AuditOutcome::Ok,
                    format!("{} row(s)", e.total()),
                ),
                Err(e) => {
                    crate::audit::ended(entry, crate::audit::AuditOutcome::Failed, e.to_string())
                }
            };
            crate::audit::record(&store, ended).await;
            store.close().await;
            println!("{}", report(&id, &erased?));
            Ok(0)
        }
    }
}

/// Erases through the command's own connection (SQLite waits its busy timeout for a gateway's
/// writer; PostgreSQL commits beside the replicas).
async fn erase_directly(
    store: &Store,
    id: &CustomerId,
    key: &ErasureKey,
) -> Result<Erased, StoreError> {
    let mut sqlite = store.open_sqlite_writer()?;
    let mut total = Erased::default();
    for _ in 0..ERASE_PASSES {
        let Some(op) = store.erase_step(id, key).await? else {
            break;
        };
        let ops = [Op::Erase(op)];
        let answers = match &mut sqlite {
            Some(writer) => writer.apply(&ops).await?,
            None => store.apply(&ops).await?,
        };
        for e in answers.erased {
            total.merge(e);
        }
    }
    Ok(total)
}

/// Erases inside a running gateway (the admin API): through its writer, then its in-memory
/// opt-outs and pauses follow what storage now says.
pub async fn erase_in_gateway(state: &AppState, id: &CustomerId) -> Result<Erased, StoreError> {
    let key = state.snapshot.load().erasure_key.clone();
    let mut erased = Erased::default();
    for _ in 0..ERASE_PASSES {
        let Some(op) = state.store.erase_step(id, &key).await? else {
            break;
        };
        erased.merge(state.writer.erase(op).await?);
    }
    for (pnid, customer) in &erased.forgotten {
        state.opted_out.set(pnid, customer, false, 0);
    }
    for (pnid, digest) in &erased.opt_outs_kept {
        state.opted_out.set(pnid, digest, true, 0);
    }
    for (pnid, customer) in &erased.unpaused {
        state.paused.clear(pnid, customer);
    }
    // The id stays out of the log: the erasure is the point.
    tracing::info!(rows = erased.total(), "customer erased on request");
    Ok(erased)
}

/// What the command prints: the rows deleted per table, and whether an opt-out was kept.
pub fn report(id: &CustomerId, erased: &Erased) -> String {
    let mut out = format!(
        "Erased customer {}: {} rows deleted.\nTABLE  ROWS\n",
        id.as_str(),
        erased.total()
    );
    for (table, rows) in &erased.deleted {
        out.push_str(&format!("{table}  {rows}\n"));
    }
    if !erased.opt_outs_kept.is_empty() {
        out.push_str(&format!(
            "The customer had opted out of {} number(s): the opt-out stays in force, kept under a \
             keyed digest of the id.\n",
            erased.opt_outs_kept.len()
        ));
    }
    out.trim_end().to_owned()
}
