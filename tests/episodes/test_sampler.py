import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from torchgeo_ssg2.episodes import (
    EpisodeDataset,
    EpisodeIndex,
    EpisodeSampler,
    IndexSupportPolicy,
    ItemReader,
)

N, T, SEED, EPOCHS = 22, 3, 5, 2


class IdDataset(Dataset[dict[str, Any]]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            'image': torch.full((1, 2, 2), float(i)),
            'mask': torch.full((2, 2), i, dtype=torch.long),
            'id': i,
        }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ['MASTER_ADDR'] = '127.0.0.1'
    os.environ['MASTER_PORT'] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        ds = EpisodeDataset(
            ItemReader(IdDataset(N)), IndexSupportPolicy(N, T, seed=SEED)
        )
        sampler = EpisodeSampler(ds, shuffle=True, seed=0, drop_last=False)
        assert sampler.num_replicas == world_size and sampler.rank == rank
        loader = DataLoader(ds, batch_size=4, sampler=sampler)
        seen = []
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            for batch in loader:
                ids = batch['id'].tolist()
                sup = batch['support_mask'][:, :, 0, 0].tolist()
                seen += [[epoch, i, s] for i, s in zip(ids, sup, strict=True)]
        dist.barrier()
    finally:
        dist.destroy_process_group()
    Path(out, f'rank{rank}.json').write_text(json.dumps(seen))


class TestEpisodeSampler:
    def test_single_process(self) -> None:
        ds = IdDataset(10)
        sampler = EpisodeSampler(ds, seed=1)
        assert sampler.num_replicas == 1 and sampler.rank == 0
        first = list(sampler)
        assert all(isinstance(i, EpisodeIndex) for i in first)
        assert sorted(i.target for i in first) == list(range(10))
        assert {i.epoch for i in first} == {0}
        sampler.set_epoch(3)
        second = list(sampler)
        assert {i.epoch for i in second} == {3}
        assert [i.target for i in first] != [i.target for i in second]

    @pytest.mark.parametrize('drop_last', [True, False])
    def test_shares_disjoint(self, drop_last: bool) -> None:
        ds = IdDataset(11)
        shares = [
            [i.target for i in EpisodeSampler(ds, 3, r, seed=2, drop_last=drop_last)]
            for r in range(3)
        ]
        flat = [t for share in shares for t in share]
        if drop_last:
            assert len(flat) == len(set(flat)) == 9
        else:
            # Padding repeats 1 target so that every rank gets 4.
            assert len(flat) == 12 and set(flat) == set(range(11))
        assert len({len(s) for s in shares}) == 1


def test_ddp_two_processes(tmp_path: Path) -> None:
    world_size = 2
    mp.start_processes(
        _worker,
        args=(world_size, free_port(), str(tmp_path)),
        nprocs=world_size,
        join=True,
        start_method='fork',
    )
    reference = IndexSupportPolicy(N, T, seed=SEED)
    per_rank = [
        json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(world_size)
    ]
    for epoch in range(EPOCHS):
        shares = [[i for e, i, _ in seen if e == epoch] for seen in per_rank]
        assert all(len(s) == N // world_size for s in shares)
        assert set(shares[0]).isdisjoint(shares[1])
        assert set(shares[0]) | set(shares[1]) == set(range(N))
    for seen in per_rank:
        for epoch, target, supports in seen:
            assert supports == reference.draw(target, epoch)
