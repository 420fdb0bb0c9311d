//! [`Cloud`] over the `outscale_api` SDK (blocking).
//!
//! One configured client per process (`Configuration` holds the reqwest client and the SDK's
//! rate limiter; building it per call would also reset the limiter). The SDK retries
//! 409/429/5xx and transport errors itself (`max_retries`); we only translate results.
//! Every error is decided on the HTTP status and the JSON body (`Errors[0]`), never on the
//! SDK's typed error variants.

use std::collections::BTreeMap;
use std::time::Duration;

use outscale_api::apis::configuration::Configuration;
use outscale_api::apis::middleware::{BackoffParams, LimiterParams};
use outscale_api::apis::{subregion_api, tag_api, vm_api, volume_api, Error as SdkError};
use outscale_api::models;

use super::{
    Cloud, CloudError, Link, LinkState, Vm, VmDevice, Volume, VolumeFilter, VolumeSpec, VolumeState,
};
use crate::config::{CloudCredentials, VolumeType};

/// The Outscale API.
pub struct OutscaleCloud {
    cfg: Configuration,
    endpoint: String,
}

impl std::fmt::Debug for OutscaleCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutscaleCloud")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl OutscaleCloud {
    /// A client for these credentials. Must not be called inside a tokio runtime (the SDK
    /// builds a blocking reqwest client).
    pub fn new(c: &CloudCredentials) -> anyhow::Result<OutscaleCloud> {
        let mut profile = outscale_api::apis::profile::Profile::builder()
            .access_key(&c.access_key, &c.secret_key.0)
            .region(&c.region)
            .build();
        profile.endpoints.api = c.endpoint.clone();
        profile.limiter_params = LimiterParams {
            max_requests: c.requests_per_second as usize,
            window: Duration::from_secs(1),
        };
        profile.backoff_params = BackoffParams {
            max_retries: c.max_retries as i32,
            ..BackoffParams::default()
        };
        let mut cfg: Configuration = profile
            .try_into()
            .map_err(|e| anyhow::anyhow!("configuring the Outscale client: {e}"))?;
        cfg.user_agent = Some(format!("one-bsud/{}", crate::VERSION));
        Ok(OutscaleCloud {
            cfg,
            endpoint: c.endpoint.clone(),
        })
    }

    /// The API endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// ReadSubregions: the subregion names (doctor uses it to prove signing works).
    pub fn subregions(&self) -> anyhow::Result<Vec<String>> {
        let r =
            subregion_api::read_subregions(&self.cfg, Some(models::ReadSubregionsRequest::new()))
                .map_err(|e| sdk_error("ReadSubregions", e))?;
        Ok(r.subregions
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.subregion_name)
            .collect())
    }
}

fn sdk_error<T>(call: &'static str, e: SdkError<T>) -> anyhow::Error {
    let err = match e {
        SdkError::ResponseError(rc) => {
            let body: serde_json::Value = serde_json::from_str(&rc.content).unwrap_or_default();
            let first = &body["Errors"][0];
            let s = |k: &str| first[k].as_str().map(str::to_string);
            let details = s("Details")
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| truncate(&rc.content, 300));
            CloudError {
                call,
                status: Some(rc.status.as_u16()),
                code: s("Code"),
                error_type: s("Type"),
                details,
            }
        }
        SdkError::Reqwest(e) => CloudError {
            call,
            status: None,
            code: None,
            error_type: None,
            details: format!("cannot reach the API: {e}"),
        },
        SdkError::Serde(e) => CloudError {
            call,
            status: None,
            code: None,
            error_type: None,
            details: format!("unexpected answer: {e}"),
        },
        SdkError::Io(e) => CloudError {
            call,
            status: None,
            code: None,
            error_type: None,
            details: e.to_string(),
        },
        SdkError::AWSV4SignatureError(e) => CloudError {
            call,
            status: None,
            code: None,
            error_type: None,
            details: format!("cannot sign the request: {e}"),
        },
    };
    err.into_error()
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut cut = n;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

fn some_vec(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn tags_of(t: Option<Vec<models::ResourceTag>>) -> BTreeMap<String, String> {
    t.unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect()
}

fn volume_of(v: models::Volume) -> Option<Volume> {
    Some(Volume {
        id: v.volume_id?,
        state: VolumeState::parse(v.state.as_deref().unwrap_or("")),
        size_gib: v.size.unwrap_or(0).max(0) as u64,
        volume_type: v.volume_type.unwrap_or_default(),
        iops: v.iops.and_then(|i| u32::try_from(i).ok()),
        subregion: v.subregion_name.unwrap_or_default(),
        tags: tags_of(v.tags),
        links: v
            .linked_volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| {
                Some(Link {
                    vm_id: l.vm_id?,
                    device: l.device_name.unwrap_or_default(),
                    state: LinkState::parse(l.state.as_deref().unwrap_or("")),
                })
            })
            .collect(),
        client_token: v.client_token.filter(|t| !t.is_empty()),
    })
}

fn resource_tags(tags: &[(String, String)]) -> Vec<models::ResourceTag> {
    tags.iter()
        .map(|(k, v)| models::ResourceTag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

impl Cloud for OutscaleCloud {
    fn create_volume(&self, spec: &VolumeSpec) -> anyhow::Result<Volume> {
        let mut req = models::CreateVolumeRequest::new(spec.subregion.clone());
        req.size = Some(i32::try_from(spec.size_gib).unwrap_or(i32::MAX));
        req.volume_type = Some(spec.volume_type.as_str().to_string());
        if spec.volume_type == VolumeType::Io1 {
            req.iops = spec.iops.map(|i| i as i32);
        }
        req.client_token = Some(spec.client_token.clone());
        let r = volume_api::create_volume(&self.cfg, Some(req))
            .map_err(|e| sdk_error("CreateVolume", e))?;
        r.volume
            .and_then(|v| volume_of(*v))
            .ok_or_else(|| anyhow::anyhow!("CreateVolume answered without a volume"))
    }

    fn create_tags(
        &self,
        resource_ids: &[String],
        tags: &[(String, String)],
    ) -> anyhow::Result<()> {
        let req = models::CreateTagsRequest::new(resource_ids.to_vec(), resource_tags(tags));
        tag_api::create_tags(&self.cfg, Some(req)).map_err(|e| sdk_error("CreateTags", e))?;
        Ok(())
    }

    fn delete_tags(
        &self,
        resource_ids: &[String],
        tags: &[(String, String)],
    ) -> anyhow::Result<()> {
        let req = models::DeleteTagsRequest::new(resource_ids.to_vec(), resource_tags(tags));
        tag_api::delete_tags(&self.cfg, Some(req)).map_err(|e| sdk_error("DeleteTags", e))?;
        Ok(())
    }

    fn find_volumes(&self, f: &VolumeFilter) -> anyhow::Result<Vec<Volume>> {
        let filters = models::FiltersVolume {
            volume_ids: some_vec(&f.ids),
            tags: (!f.tags.is_empty())
                .then(|| f.tags.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            tag_keys: some_vec(&f.tag_keys),
            volume_states: some_vec(&f.states),
            client_tokens: some_vec(&f.client_tokens),
            link_volume_vm_ids: some_vec(&f.linked_vm_ids),
            ..Default::default()
        };
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        // Bounded: a runaway paginator must not loop forever.
        for _ in 0..1000 {
            let req = models::ReadVolumesRequest {
                filters: Some(Box::new(filters.clone())),
                next_page_token: page.clone(),
                ..Default::default()
            };
            let r = volume_api::read_volumes(&self.cfg, Some(req))
                .map_err(|e| sdk_error("ReadVolumes", e))?;
            out.extend(
                r.volumes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(volume_of),
            );
            match r.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => page = Some(t),
                None => return Ok(out),
            }
        }
        anyhow::bail!("ReadVolumes returned more than 1000 pages")
    }

    fn link_volume(&self, volume_id: &str, vm_id: &str, device: &str) -> anyhow::Result<()> {
        let req = models::LinkVolumeRequest::new(
            device.to_string(),
            vm_id.to_string(),
            volume_id.to_string(),
        );
        volume_api::link_volume(&self.cfg, Some(req)).map_err(|e| sdk_error("LinkVolume", e))?;
        Ok(())
    }

    fn unlink_volume(&self, volume_id: &str, force: bool) -> anyhow::Result<()> {
        let mut req = models::UnlinkVolumeRequest::new(volume_id.to_string());
        if force {
            req.force_unlink = Some(true);
        }
        volume_api::unlink_volume(&self.cfg, Some(req))
            .map_err(|e| sdk_error("UnlinkVolume", e))?;
        Ok(())
    }

    fn delete_volume(&self, volume_id: &str) -> anyhow::Result<()> {
        let req = models::DeleteVolumeRequest::new(volume_id.to_string());
        volume_api::delete_volume(&self.cfg, Some(req))
            .map_err(|e| sdk_error("DeleteVolume", e))?;
        Ok(())
    }

    fn vm(&self, vm_id: &str) -> anyhow::Result<Vm> {
        let req = models::ReadVmsRequest {
            filters: Some(Box::new(models::FiltersVm {
                vm_ids: Some(vec![vm_id.to_string()]),
                ..Default::default()
            })),
            ..Default::default()
        };
        let r = vm_api::read_vms(&self.cfg, Some(req)).map_err(|e| sdk_error("ReadVms", e))?;
        let vm = r
            .vms
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.vm_id.as_deref() == Some(vm_id))
            .ok_or_else(|| {
                crate::error::fail(
                    crate::error::ErrorKind::Failed,
                    format!("VM {vm_id} does not exist in this Outscale account"),
                )
            })?;
        Ok(Vm {
            id: vm_id.to_string(),
            subregion: vm
                .placement
                .and_then(|p| p.subregion_name)
                .unwrap_or_default(),
            state: vm.state.unwrap_or_default(),
            devices: vm
                .block_device_mappings
                .unwrap_or_default()
                .into_iter()
                .filter_map(|b| {
                    let bsu = b.bsu?;
                    Some(VmDevice {
                        device: b.device_name?,
                        volume_id: bsu.volume_id.unwrap_or_default(),
                        state: bsu.state.unwrap_or_default(),
                    })
                })
                .collect(),
            tags: tags_of(vm.tags),
        })
    }
}
