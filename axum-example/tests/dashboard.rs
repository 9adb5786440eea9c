//! The dashboard at `/` in a real headless Chromium (Debian's `chromium`):
//! the numbers its script renders follow the requests sent to the app.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::Page;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use support::App;
use tower_cache_tests::PATIENCE;

/// The browser: `$CHROMIUM`, else `chromium` on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the dashboard test needs a headless Chromium: install Debian's \
                 `chromium` (`apt-get install -y chromium`; .ci/run does), or set \
                 CHROMIUM to the browser's path"
            )
        })
}

/// A headless Chromium on a profile of its own, and the task that reads
/// its DevTools events.
struct Chromium {
    browser: Browser,
    events: tokio::task::JoinHandle<()>,
    profile: PathBuf,
}

impl Chromium {
    async fn launch() -> Chromium {
        let profile = std::env::temp_dir().join(format!(
            "tower-cache-dashboard-{}-{}",
            std::process::id(),
            support::free_port()
        ));
        let config = BrowserConfig::builder()
            .chrome_executable(chromium())
            .user_data_dir(&profile)
            // Root in a container: Chromium's sandbox cannot start.
            .no_sandbox()
            .args(["--disable-gpu", "--disable-dev-shm-usage"])
            .launch_timeout(PATIENCE)
            .request_timeout(PATIENCE)
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.unwrap();
        // Events this crate does not know are reported as errors; the
        // connection goes on.
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Chromium {
            browser,
            events,
            profile,
        }
    }

    async fn close(mut self) {
        self.browser.close().await.unwrap();
        self.browser.wait().await.unwrap();
        self.events.abort();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The value of the JavaScript expression `js` in `page`, or why it has
/// none (the page still loading, say).
async fn eval<T: DeserializeOwned>(page: &Page, js: &str) -> Result<T, String> {
    let result = page.evaluate(js).await.map_err(|e| e.to_string())?;
    result.into_value().map_err(|e| e.to_string())
}

/// JavaScript for the text the page shows in the `field` cell of
/// `route`'s row (empty without such a row).
fn cell(route: &str, field: &str) -> String {
    format!(
        "(() => {{ const td = document.querySelector('tr[data-route=\"{route}\"] td[data-field=\"{field}\"]'); \
         return td ? td.textContent : ''; }})()"
    )
}

/// Waits until `js` evaluates in `page` to a value `done` accepts, and
/// returns it; fails with what the page showed last.
async fn until<T, F>(page: &Page, js: &str, mut done: F) -> T
where
    T: DeserializeOwned + std::fmt::Debug,
    F: FnMut(&T) -> bool,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = eval::<T>(page, js).await;
        match value {
            Ok(value) if done(&value) => return value,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the page still shows {value:?} for {js}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_hits_of_requests_sent_after_it_loaded() {
    let app = App::start(&[]).await;
    let chromium = Chromium::launch().await;
    let page = chromium.browser.new_page(app.url("/")).await.unwrap();
    let route = "/products/{id}";

    // The script has drawn its first answer of `/dashboard.json` (the
    // app drew the rows as they stood when it served the page).
    until(
        &page,
        "document.getElementById('status').textContent",
        |status: &String| status.starts_with("live"),
    )
    .await;
    assert_eq!(
        eval::<String>(&page, &cell(route, "hit")).await.unwrap(),
        "0",
        "no request yet"
    );

    // One miss, then five hits.
    for _ in 0..6 {
        let (status, _, _) = app.get("/products/42").await;
        assert!(status.is_success());
    }
    until(&page, &cell(route, "hit"), |shown: &String| shown == "5").await;
    // Drawn in the same pass as the hits.
    let shown = |field| {
        let page = &page;
        async move { eval::<String>(page, &cell(route, field)).await.unwrap() }
    };
    assert_eq!(shown("miss").await, "1");
    assert_eq!(shown("coalesced").await, "0");
    assert_eq!(shown("requests").await, "6");
    assert_eq!(shown("hit_ratio").await, "83.3 %");

    // A request with credentials bypasses the cache, and counts in the
    // ratio's denominator.
    let res = app
        .client
        .get(app.url("/products/42"))
        .header("authorization", "Bearer user-7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "BYPASS");
    until(&page, &cell(route, "hit_ratio"), |shown: &String| {
        shown == "71.4 %"
    })
    .await;
    assert_eq!(shown("bypass").await, "1");

    // The chart draws the route's hit ratio.
    until(
        &page,
        "document.querySelector('#chart [data-route=\"/products/{id}\"]') !== null",
        |drawn: &bool| *drawn,
    )
    .await;
    chromium.close().await;
}
