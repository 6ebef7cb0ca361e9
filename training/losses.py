"""The training objectives: stage 1 (`PretrainObjective`: EMD of both vision-language heads + `itc_weight` times
the momentum image-text contrastive loss of `MomentumContrast`) and stage 2 (`AdaptObjective`: EMD + `mse_weight`
times the MSE of the image-only branch through the active dataset adapter). Each is an `nn.Module` that the loop
prepares with accelerate and calls on a batch: `loss, parts = objective(batch)`."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .train_config import TrainConfig


class MomentumContrast(nn.Module):
    """ALBEF-style image-text contrastive loss as the original code trains it: unimodal features (the mean of
    `norm_cl` over the last Swin stage's tokens; BERT's [CLS]), no projection heads, momentum encoders (m = 0.995)
    whose features fill queues of `queue_size`, a learnable temperature clamped to [0.001, 0.5], identity targets
    over the in-batch momentum features. Training-only: never part of the saved model, always part of the
    resumable training state."""

    def __init__(self, model, queue_size=1024, momentum=0.995, temperature=0.07):
        super().__init__()
        hidden = model.config.hidden_size
        self.momentum = momentum
        self.norm_cl = nn.LayerNorm(hidden, eps=model.config.vision_config.layer_norm_eps)
        self.temp = nn.Parameter(torch.tensor(float(temperature)))
        # Momentum copies of the encoders the features come from (frozen; updated by EMA only).
        self.vision_m = copy.deepcopy(model.vision_model)
        self.text_m = copy.deepcopy(model.text_model)
        self.projection_m = copy.deepcopy(model.vision_projection)
        self.norm_cl_m = copy.deepcopy(self.norm_cl)
        for module in self._momentum_modules():
            module.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("image_queue", F.normalize(torch.randn(hidden, queue_size, generator=g), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(hidden, queue_size, generator=g), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _momentum_modules(self):
        return [m for m in (self.vision_m, self.text_m, self.projection_m, self.norm_cl_m) if m is not None]

    def _online_pairs(self, model):
        return [(model.vision_model, self.vision_m), (model.text_model, self.text_m),
                (model.vision_projection, self.projection_m), (self.norm_cl, self.norm_cl_m)]

    @torch.no_grad()
    def momentum_update(self, model):
        for online, momentum in self._online_pairs(model):
            if online is None:
                continue
            for p, p_m in zip(online.parameters(), momentum.parameters()):
                p_m.mul_(self.momentum).add_(p.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def momentum_features(self, pixel_values, input_ids, attention_mask, token_type_ids):
        stage4 = self.vision_m(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-1]
        if self.projection_m is not None:
            stage4 = self.projection_m(stage4)
        image = F.normalize(self.norm_cl_m(stage4).mean(dim=1), dim=-1)
        text = self.text_m(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state[:, 0]
        return image, F.normalize(text, dim=-1)

    @torch.no_grad()
    def enqueue(self, image_feats, text_feats):
        n, size = image_feats.shape[0], self.image_queue.shape[1]
        index = (self.queue_ptr + torch.arange(n, device=image_feats.device)) % size  # circular: any batch size
        self.image_queue[:, index] = image_feats.T.to(self.image_queue.dtype)
        self.text_queue[:, index] = text_feats.T.to(self.text_queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def loss(self, model, heads, batch, gather=None):
        """The contrastive loss of a batch from `heads` (`AesformerModel.forward_heads`'s unimodal embeddings)."""
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
            self.momentum_update(model)
            image_m, text_m = self.momentum_features(
                batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
            )
            image_all = torch.cat([image_m.T, self.image_queue.clone()], dim=1)
            text_all = torch.cat([text_m.T, self.text_queue.clone()], dim=1)
        image = F.normalize(self.norm_cl(heads.unimodal_image_embeds).mean(dim=1), dim=-1)
        text = F.normalize(heads.unimodal_text_embeds, dim=-1)
        targets = torch.arange(image.shape[0], device=image.device)  # identity over the in-batch features
        loss = (F.cross_entropy(image @ text_all / self.temp, targets)
                + F.cross_entropy(text @ image_all / self.temp, targets)) / 2
        # Momentum features of every process enter the queue (gathered before enqueueing).
        image_m, text_m = (gather(image_m), gather(text_m)) if gather is not None else (image_m, text_m)
        self.enqueue(image_m, text_m)
        return loss


class PretrainObjective(nn.Module):
    """Stage 1: the model plus its training-only contrastive state, prepared as one module."""

    def __init__(self, model, config: TrainConfig):
        super().__init__()
        self.model = model
        self.contrast = MomentumContrast(model, config.queue_size, config.momentum, config.temperature)
        self.itc_weight = config.itc_weight
        # Image-only parts are frozen in stage 1.
        for module in [model.multi_scale_adapter, model.vision_norm, model.vision_head]:
            module.requires_grad_(False)
        for layer in model.fusion_layers:
            layer.vision_ffn.requires_grad_(False)
        self.gather = None

    def forward(self, batch):
        # One forward that also returns the unimodal embeddings the contrastive loss reads.
        heads = self.model.forward_heads(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                                         attention_mask=batch["attention_mask"],
                                         token_type_ids=batch.get("token_type_ids"), labels=batch["labels"])
        output = heads.output
        itc = self.contrast.loss(self.model, heads, batch, gather=self.gather)
        return output.loss + self.itc_weight * itc, {"emd": output.loss.detach(), "itc": itc.detach()}


class AdaptObjective(nn.Module):
    """Stage 2: image-only branch through the active dataset adapter; EMD + mse_weight · MSE."""

    def __init__(self, peft_model, config: TrainConfig):
        super().__init__()
        self.model = peft_model
        self.mse_weight = config.mse_weight

    def forward(self, batch):
        output = self.model(pixel_values=batch["pixel_values"], labels=batch["labels"])
        target = batch["labels"] / batch["labels"].sum(-1, keepdim=True)
        mse = F.mse_loss(output.distribution, target)
        return output.loss + self.mse_weight * mse, {"emd": output.loss.detach(), "mse": mse.detach()}


__all__ = ["AdaptObjective", "MomentumContrast", "PretrainObjective"]
