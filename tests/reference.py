"""Plain, obvious reference computations the fast paths are tested against."""

import torch
import torch.nn.functional as F


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                         loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum(mask * token_loss) / max(sum(mask), 1); no mask = plain mean over all tokens."""
    token_loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    if loss_mask is None:
        return token_loss.mean()
    mask = loss_mask.reshape(-1).to(token_loss.dtype)
    return (token_loss * mask).sum() / mask.sum().clamp(min=1.0)
