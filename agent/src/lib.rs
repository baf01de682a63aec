//! signet-agent: attests its node to the issuer; the node API client lives in [`node_client`].
