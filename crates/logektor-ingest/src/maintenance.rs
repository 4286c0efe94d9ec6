//! Table upkeep run by the server beside the flusher: compaction, checkpoints, vacuum and
//! retention on a schedule, and erasure on request.
//!
//! Each operation is an ordinary Delta commit (see `logektor_table::maintenance`); afterwards
//! the writer's table handle catches up and the buffer gets the new snapshot, so readers move
//! off replaced files long before a vacuum may delete them (the grace period).

use std::sync::Arc;
use std::time::Duration;

use logektor_table::maintenance::{
    self, CompactionConfig, CompactionReport, DeleteReport, Person, RetentionReport,
    RetentionRules, VacuumReport,
};
use tokio::sync::watch;
use tracing::{error, info};

use crate::Ingester;

/// When and how the server tidies the table.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// How often compaction and retention are considered (0 = never in the background).
    pub interval: Duration,
    pub compaction: CompactionConfig,
    /// How often removed files are vacuumed (0 = never in the background).
    pub vacuum_interval: Duration,
    /// How long a removed file stays on disk for readers that still hold an older snapshot.
    pub vacuum_grace: Duration,
    pub retention: RetentionRules,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5 * 60),
            compaction: CompactionConfig::default(),
            vacuum_interval: Duration::from_secs(60 * 60),
            vacuum_grace: Duration::from_secs(60 * 60),
            retention: RetentionRules::default(),
        }
    }
}

/// Longest time the readers' snapshot lags commits of other processes.
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

fn today_days() -> i32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i32::try_from(now.as_secs() / 86_400).unwrap_or(i32::MAX)
}

impl Ingester {
    /// Compacts partitions that have accumulated small files (every partition with more than
    /// one file when `force`).
    pub async fn compact(&self, force: bool) -> Result<CompactionReport, logektor_table::Error> {
        // One compaction at a time in this process (the scheduled one and requests): of two
        // concurrent ones only one could commit (see `maintenance::compact`), so the other
        // would have done its work for nothing and answered a conflict.
        let _one_at_a_time = self.compaction_lock.lock().await;
        let report = maintenance::compact_yielding(
            &self.location,
            &self.maintenance.compaction,
            force,
            &|| self.flush_behind(),
        )
        .await?;
        self.refresh_table().await?;
        Ok(report)
    }

    /// Deletes files removed from the table more than `grace` ago.
    pub async fn vacuum(&self, grace: Duration) -> Result<VacuumReport, logektor_table::Error> {
        // Readers move to the latest version first, so none of ours holds a removed file.
        self.refresh_table().await?;
        maintenance::vacuum(&self.location, grace).await
    }

    /// Writes a checkpoint and drops expired log files.
    pub async fn checkpoint(&self) -> Result<Option<u64>, logektor_table::Error> {
        let version = maintenance::checkpoint(&self.location).await?;
        self.refresh_table().await?;
        Ok(version)
    }

    /// Applies the configured retention rules now.
    pub async fn expire(&self) -> Result<RetentionReport, logektor_table::Error> {
        let report =
            maintenance::expire(&self.location, &self.maintenance.retention, today_days()).await?;
        self.refresh_table().await?;
        Ok(report)
    }

    /// Forgets a person: flushes what is buffered (so their newest events are in the table),
    /// then deletes their rows. Events of theirs acknowledged after this call are kept.
    pub async fn forget(&self, person: &Person) -> Result<DeleteReport, logektor_table::Error> {
        self.flush_now().await?;
        let report = maintenance::erase(&self.location, person).await?;
        self.refresh_table().await?;
        Ok(report)
    }

    /// Runs compaction, retention and vacuum on their schedules until `shutdown` turns true.
    /// The server runs it on its low-priority upkeep runtime: compaction encodes Parquet.
    pub async fn run_maintenance(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let config = self.maintenance.clone();
        // Even with upkeep only on request, the readers' snapshot follows commits of other
        // processes (an offline `logektor table optimize`, say) at least this often, well
        // within any vacuum grace period.
        let tick = [config.interval, config.vacuum_interval, REFRESH_INTERVAL]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(REFRESH_INTERVAL);
        let started = tokio::time::Instant::now();
        let (mut last_upkeep, mut last_vacuum) = (started, started);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(err) = self.refresh_table().await {
                error!(error = %err, "table refresh failed; will retry");
            }
            if !config.interval.is_zero() && last_upkeep.elapsed() >= config.interval {
                last_upkeep = tokio::time::Instant::now();
                if !config.retention.is_empty()
                    && let Err(err) = self.expire().await
                {
                    error!(error = %err, "retention failed; will retry");
                }
                match self.compact(false).await {
                    Ok(report) if report.files_removed > 0 => {
                        if let Err(err) = self.checkpoint().await {
                            error!(error = %err, "checkpoint failed; will retry");
                        }
                    }
                    Ok(_) => {}
                    Err(err) => error!(error = %err, "compaction failed; will retry"),
                }
            }
            if !config.vacuum_interval.is_zero() && last_vacuum.elapsed() >= config.vacuum_interval
            {
                last_vacuum = tokio::time::Instant::now();
                match self.vacuum(config.vacuum_grace).await {
                    Ok(report) => info!(files_deleted = report.files_deleted, "vacuum done"),
                    Err(err) => error!(error = %err, "vacuum failed; will retry"),
                }
            }
        }
    }
}
