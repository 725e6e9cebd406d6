//! Just enough of the W3C WebDriver protocol to drive Debian's headless
//! Chromium through chromedriver (started per test on a free port).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Chrome {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Chrome {
    /// Starts chromedriver and a headless Chromium that downloads into `downloads`.
    pub async fn start(downloads: &Path) -> Chrome {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is required (Debian package chromium-driver; .ci/run installs it)",
            );
        let base = format!("http://127.0.0.1:{port}");
        sealpost::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "safebrowsing.enabled": false
                }
            }
        }}});
        let v = post(&http, &format!("{base}/session"), &caps).await;
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        let mut chrome = Chrome {
            driver,
            base,
            session,
            http,
        };
        // Allow downloads in headless mode (Chrome DevTools command).
        chrome
            .cmd(
                "goog/cdp/execute",
                json!({"cmd": "Browser.setDownloadBehavior", "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}}),
            )
            .await;
        chrome
    }

    async fn cmd(&mut self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let v = post(&self.http, &url, &body).await;
        assert!(v["value"]["error"].is_null(), "{path}: {v}");
        v["value"].clone()
    }

    async fn get_value(&self, path: &str) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let text = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["value"].clone()
    }

    pub async fn goto(&mut self, url: &str) {
        self.cmd("url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.get_value("url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.get_value("source")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find(&mut self, css: &str) -> String {
        let v = self
            .cmd("element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub async fn type_into(&mut self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(&format!("element/{id}/value"), json!({ "text": text }))
            .await;
    }

    pub async fn click(&mut self, css: &str) {
        let id = self.find(css).await;
        self.cmd(&format!("element/{id}/click"), json!({})).await;
    }

    /// Waits until the page source contains `text`.
    pub async fn wait_for(&self, text: &str) -> String {
        for _ in 0..100 {
            let s = self.source().await;
            if s.contains(text) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("page never showed {text:?}: {}", self.source().await);
    }
}

impl Chrome {
    /// Ends the browser session (closing Chromium) before the driver goes.
    pub async fn quit(self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: {text}"))
}
