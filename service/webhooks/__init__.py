"""Signed webhooks: who may be called, signing, delivery with retries, subscriptions."""

from service.webhooks.addresses import (
    AddressPolicy,
    Resolver,
    WebhookRefused,
    parse_allow,
    system_resolver,
)
from service.webhooks.delivery import Attempt, DeliveryObserver, WebhookDeliverer
from service.webhooks.signing import WebhookSecrets, new_secret
from service.webhooks.subscriptions import EVENTS, Subscription, Webhooks

__all__ = [
    "EVENTS",
    "AddressPolicy",
    "Attempt",
    "DeliveryObserver",
    "Resolver",
    "Subscription",
    "WebhookDeliverer",
    "WebhookRefused",
    "WebhookSecrets",
    "Webhooks",
    "new_secret",
    "parse_allow",
    "system_resolver",
]
