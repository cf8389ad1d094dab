//! A real browser driven through WebDriver: Debian's `chromedriver` (from
//! `scripts/browser.sh`) running headless Chromium, spoken to in plain HTTP, for the tests that
//! click on the dashboard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{eventually, http};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Start `chromedriver` (`$CHROMEDRIVER`, else `chromedriver`) and a headless Chromium
    /// (`$CHROMIUM`, else `chromium`) session.
    ///
    /// # Panics
    /// When either cannot be started: run `scripts/browser.sh` to install them.
    pub async fn start() -> Browser {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let addr = http::free_addr();
        let driver = Command::new(&bin)
            .arg(format!("--port={}", addr.port()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin:?} ({e}): run scripts/browser.sh to install it")
            });
        eventually("chromedriver ready", Duration::from_secs(30), || async {
            let status = http::get(addr, "/status").await?.json();
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile = std::env::temp_dir().join(format!("shardline-wd-{}", uuid::Uuid::new_v4()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let created = http::json(addr, "POST", "/session", &caps)
            .await
            .expect("chromedriver answers")
            .json();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Browser {
            driver,
            addr,
            session,
            profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: &Value) -> Option<Value> {
        let path = format!("/session/{}{path}", self.session);
        let a = http::json(self.addr, method, &path, body).await?;
        (a.status == 200).then(|| a.json()["value"].clone())
    }

    /// Open `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", &json!({ "url": url }))
            .await
            .expect("the browser opens the page");
    }

    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                "POST",
                "/element",
                &json!({ "using": "css selector", "value": css }),
            )
            .await?;
        Some(found[ELEMENT].as_str()?.to_owned())
    }

    /// Type `text` into the element `css`; false when it is not there (yet).
    pub async fn type_into(&self, css: &str, text: &str) -> bool {
        let Some(e) = self.find(css).await else {
            return false;
        };
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            &json!({ "text": text }),
        )
        .await
        .is_some()
    }

    /// Click the element `css`; false when it is not there (yet).
    pub async fn click(&self, css: &str) -> bool {
        let Some(e) = self.find(css).await else {
            return false;
        };
        self.call("POST", &format!("/element/{e}/click"), &json!({}))
            .await
            .is_some()
    }

    /// The text of the element `css`, if it is there.
    pub async fn text(&self, css: &str) -> Option<String> {
        let e = self.find(css).await?;
        let text = self
            .call("GET", &format!("/element/{e}/text"), &json!({}))
            .await?;
        Some(text.as_str()?.to_owned())
    }

    /// End the session and the driver.
    pub async fn quit(mut self) {
        let _ = http::request(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
        )
        .await;
        let _ = self.driver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
