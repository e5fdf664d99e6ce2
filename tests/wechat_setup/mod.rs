//! What the WeChat route tests share: a hub pointed at a fake WeChat backend, a WeChat
//! application known to both, a product of an owner with devices, and a client for the WeChat
//! application's signed routes.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard::ids::DeviceId;
use switchyard::store::NewProduct;
use switchyard::store::device::FactoryDetails;

use crate::common::xlink::{Reply, Xlink, xlink};
use crate::common::{TestHub, TestUser};
use crate::wechat_fake::FakeWeChat;

pub const WXAPP: &str = "wx0123456789abcdef";
pub const WXSECRET: &str = "0123456789abcdef0123456789abcdef";
pub const PRODUCT: &str = "lamp";
/// WeChat's product id in the binding.
pub const WX_PRODUCT: u64 = 458;

pub struct World {
    pub fake: FakeWeChat,
    pub hub: TestHub,
    pub owner: TestUser,
    pub stranger: TestUser,
}

/// A hub on the fake backend; `owner` owns product `lamp`; no binding yet.
pub async fn world() -> World {
    world_with(|s| s).await
}

pub async fn world_with(tune: impl FnOnce(switchyard::Settings) -> switchyard::Settings) -> World {
    let fake = FakeWeChat::start();
    fake.add_app(WXAPP, WXSECRET);
    let base = fake.base();
    let hub = TestHub::start_with(|s| tune(s.set("wechat_api_base", base))).await;
    hub.hub.store.add_wechat_app(WXAPP, WXSECRET).await.unwrap();
    let owner = hub.user("owner@example.com").await;
    let stranger = hub.user("stranger@example.com").await;
    let p = NewProduct {
        product_id: PRODUCT.into(),
        name: "Lamp".into(),
        model: "EMU".into(),
        allow_user_register: false,
        owner: Some(owner.apikey.clone()),
    };
    hub.hub.store.add_product(&p).await.unwrap();
    World { fake, hub, owner, stranger }
}

impl World {
    /// A device of the product (factory key `key-<id>`), owned by the product's owner when `owned`.
    pub async fn device(&self, id: &str, mac: &str, owned: bool) {
        let details = FactoryDetails { mac: Some(mac.into()), product_id: Some(PRODUCT.into()), ..Default::default() };
        let owner = owned.then_some(&self.owner.apikey);
        self.hub.hub.store.add_factory_device(&DeviceId::new(id), &format!("key-{id}"), "EMU", 1, owner, "lamp", &details).await.unwrap();
    }

    pub fn owner(&self) -> Xlink<'_> {
        xlink(&self.hub, &self.owner)
    }

    pub fn stranger(&self) -> Xlink<'_> {
        xlink(&self.hub, &self.stranger)
    }

    /// Binds the product to the WeChat application.
    pub async fn bind_product(&self) {
        self.owner().post(&format!("/v2/wechat/{PRODUCT}/bind"), binding()).await.empty();
    }

    /// POSTs `body` to a WeChat application route, signed with `secret` as `appid`.
    pub async fn signed_as(&self, appid: &str, secret: &str, path: &str, body: &Value) -> Reply {
        let text = body.to_string();
        let res = self
            .hub
            .http_client()
            .post(format!("{}{path}", self.hub.base()))
            .header("X-CK-Appid", appid)
            .header("Authorization", format!("Sign {}", switchyard::auth::sign(secret, text.as_bytes())))
            .header("Content-Type", "application/json")
            .body(text)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let raw = res.text().await.unwrap_or_default();
        let body =
            if raw.is_empty() { Value::Null } else { serde_json::from_str(&raw).unwrap_or_else(|_| panic!("not JSON ({status}): {raw}")) };
        Reply { status, body, raw }
    }

    /// POSTs to a WeChat application route as the test's WeChat application.
    pub async fn wx(&self, path: &str, body: Value) -> Reply {
        self.signed_as(WXAPP, WXSECRET, path, &body).await
    }

    /// Binds WeChat user `openid` to `device` by its QR code.
    pub async fn bind_user(&self, openid: &str, device: &str) -> Reply {
        self.wx("/v2/wechat/user/bind", json!({"openid": openid, "push_token": format!("pt-{openid}"), "qrcode": qrcode(device)})).await
    }
}

/// The seed's binding body.
pub fn binding() -> Value {
    json!({"app_id": WXAPP, "wechat_iot": {
        "product_id": WX_PRODUCT.to_string(), "connect_protocol": "4", "auth_key": "", "close_strategy": "1", "conn_strategy": "1",
        "crypt_method": "0", "auth_ver": "1", "manu_mac_pos": "-1", "ser_mac_pos": "-2", "ble_simple_protocol": "1"}})
}

/// The QR payload text of a device with factory key `key-<id>`.
pub fn qrcode(device: &str) -> String {
    let digest = hex::encode(Sha256::digest(format!("{device}key-{device}").as_bytes()));
    json!({"deviceid": device, "digest": digest}).to_string()
}

/// Polls `f` until it answers true (at most 10 s).
pub async fn eventually<F: Future<Output = bool>>(mut f: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
