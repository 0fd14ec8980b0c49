//! A PostgreSQL database that `storage.url` names but that does not exist: the gateway creates
//! it when its user may, also when several replicas start at once, and otherwise says once, with
//! the statement to run, what to do.

use crate::common;

use common::{Db, pg_admin_url};
use sqlx::Connection;
use wa_gateway::store::Store;

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap()
}

async fn exists(name: &str) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut admin().await)
        .await
        .unwrap()
        == 1
}

fn storage_at(url: &str) -> wa_gateway::config::Storage {
    wa_gateway::config::Storage {
        url: url.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_missing_database_is_created_once_even_by_replicas_starting_together() {
    let Some(storage) = common::storage(Db::Postgres).await else {
        return;
    };
    let name = storage.pg_name.clone().unwrap();
    sqlx::query(&format!("DROP DATABASE {name}"))
        .execute(&mut admin().await)
        .await
        .unwrap();
    assert!(!exists(&name).await);
    let cfg = storage_at(&storage.url);
    let (a, b) = tokio::join!(Store::connect(&cfg), Store::connect(&cfg));
    let (a, b) = (a.expect("created"), b.expect("found"));
    assert!(exists(&name).await);
    assert_eq!(
        a.installation(),
        b.installation(),
        "one database, migrated once"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_user_who_may_not_create_it_is_told_the_statement_to_run() {
    let Some(_storage) = common::storage(Db::Postgres).await else {
        return;
    };
    let role = format!("wagw_nocreate_{}", rand::random::<u32>());
    let mut conn = admin().await;
    sqlx::query(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'pw' NOCREATEDB"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let host = pg_admin_url()
        .rsplit_once('@')
        .map(|(_, rest)| rest.split('/').next().unwrap().to_owned())
        .unwrap();
    let missing = format!("wagw_missing_{}", rand::random::<u32>());
    let url = format!("postgres://{role}:pw@{host}/{missing}");
    let Err(err) = Store::connect(&storage_at(&url)).await else {
        panic!("a user without CREATEDB created a database");
    };
    let err = err.to_string();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(!exists(&missing).await);
    assert!(
        err.contains(&format!("CREATE DATABASE \"{missing}\" OWNER \"{role}\";"))
            && err.contains("permission denied"),
        "{err}"
    );
}
