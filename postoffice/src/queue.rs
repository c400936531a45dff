//! beanstalkd as the post office sees it: a pool of connections that `use` the outbound tube,
//! and the start-up check that the server is there and takes jobs as large as our limit.

use std::time::{Duration, Instant};

use beanstalk::{Client, Pool};

use crate::config::{Config, JOB_OVERHEAD};

/// Why beanstalkd is not fit to queue into.
#[derive(Debug, thiserror::Error)]
pub enum QueueCheckError {
    #[error("beanstalkd at {addr} is unreachable: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: beanstalk::Error,
    },
    #[error(
        "beanstalkd at {addr} takes jobs of at most {max_job_size} bytes, but max_message_size \
         is {max_message_size} (plus {JOB_OVERHEAD} bytes of envelope): start beanstalkd with \
         `-z {needed}` or lower max_message_size"
    )]
    JobSize {
        addr: String,
        max_job_size: u64,
        max_message_size: u64,
        needed: u64,
    },
    #[error("invalid tube name: {0}")]
    Tube(#[from] beanstalk::Error),
}

/// Connects once and compares `max-job-size` with our limit. Returns the server's limit.
pub async fn check(config: &Config) -> Result<u64, QueueCheckError> {
    let unreachable = |source| QueueCheckError::Unreachable {
        addr: config.beanstalkd.clone(),
        source,
    };
    let mut client = Client::connect(config.beanstalkd.clone())
        .await
        .map_err(unreachable)?;
    let stats = client.stats().await.map_err(unreachable)?;
    let max_job_size = stats.get_u64("max-job-size").unwrap_or(65_535);
    let needed = config.max_message_size.0 + JOB_OVERHEAD;
    if max_job_size < needed {
        return Err(QueueCheckError::JobSize {
            addr: config.beanstalkd.clone(),
            max_job_size,
            max_message_size: config.max_message_size.0,
            needed,
        });
    }
    Ok(max_job_size)
}

/// [`check`], retried while beanstalkd is unreachable for up to `startup_wait` (it may be
/// starting next to us under docker-compose).
pub async fn wait_and_check(config: &Config) -> Result<u64, QueueCheckError> {
    let deadline = Instant::now() + config.startup_wait;
    loop {
        match check(config).await {
            Err(QueueCheckError::Unreachable { .. }) if Instant::now() < deadline => {
                tracing::warn!(beanstalkd = %config.beanstalkd, "waiting for beanstalkd");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// The pool of connections for puts.
pub fn pool(config: &Config) -> Result<Pool, QueueCheckError> {
    let client_config = beanstalk::Config {
        connect_timeout: Duration::from_secs(2),
        io_timeout: Some(Duration::from_secs(10)),
        ..beanstalk::Config::default()
    };
    Ok(Pool::with_config(
        config.beanstalkd.clone(),
        &config.tube,
        config.pool_size,
        client_config,
    )?)
}
