import numpy as np
import torch

from dreamercli.buffer import ReplayBuffer, random_replay


def fill(buf, episodes):
    """Add episodes of given lengths; obs encode (episode, t) so sequences can be checked."""
    for ep, length in enumerate(episodes):
        for t in range(length):
            obs = np.array([ep, t], np.float32)
            buf.add(obs, np.array([1.0]), 1.0, obs + np.array([0, 1], np.float32), t == length - 1, ep)


def test_sequences_never_leave_their_episode():
    buf = ReplayBuffer(100, 2, 1)
    fill(buf, [5, 3, 7])
    batch = buf.sample(64, 4, np.random.default_rng(0), torch.device("cpu"))
    assert batch.obs.shape == (64, 4, 2) and batch.mask.shape == (64, 4)
    for b in range(64):
        ep = batch.obs[b, 0, 0]
        for t in range(4):
            if batch.mask[b, t]:
                assert batch.obs[b, t, 0] == ep and batch.obs[b, t, 1] == batch.obs[b, 0, 1] + t
        # a mask is a prefix: once off, it stays off
        m = batch.mask[b].tolist()
        assert m == sorted(m, reverse=True)
    assert batch.mask[:, 0].all()


def test_ring_buffer_wraps_and_keeps_capacity():
    buf = ReplayBuffer(10, 2, 1)
    fill(buf, [6, 6])
    assert len(buf) == 10 and buf.cursor == 2
    # the two oldest transitions of episode 0 were overwritten by episode 1's last two
    assert buf.obs[0].tolist() == [1, 4] and buf.obs[2].tolist() == [0, 2]
    batch = buf.sample(200, 3, np.random.default_rng(1), torch.device("cpu"))
    for b in range(200):
        if batch.mask[b, 1]:
            assert batch.obs[b, 1, 0] == batch.obs[b, 0, 0]
            assert batch.obs[b, 1, 1] == batch.obs[b, 0, 1] + 1


def test_terminal_flags_and_rewards_are_kept():
    buf = ReplayBuffer(20, 2, 1)
    fill(buf, [3])
    assert buf.terminated[:3].tolist() == [0.0, 0.0, 1.0]
    assert buf.rewards[:3].tolist() == [1.0, 1.0, 1.0]


def test_random_replay_cuts_never_ending_episodes_at_the_step_limit():
    buffer, spec = random_replay("custom_env:NeverEnds", 10, max_episode_steps=4)
    assert spec.discrete and buffer.episode[:10].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert not buffer.terminated[:10].any()  # a time limit is not a termination


def test_n_step_transitions_stop_at_the_episodes_end_and_at_the_newest_data():
    buf = ReplayBuffer(100, 2, 1)
    fill(buf, [5, 7])  # episode 1 is still running: its last stored step is not terminal
    buf.terminated[11] = 0.0
    buf.rewards[:12] = np.arange(12, dtype=np.float32)
    batch = buf.sample_transitions(300, np.random.default_rng(0), torch.device("cpu"), nstep=3, discount=0.5)
    for obs, nxt, reward, term, steps in zip(batch.obs, batch.next_obs, batch.rewards, batch.terminated, batch.steps,
                                             strict=True):
        ep, t = int(obs[0]), int(obs[1])
        slot, length = (t, 5) if ep == 0 else (5 + t, 7)
        n = min(3, length - t)  # cut by the end of episode 0, or by the newest step of episode 1
        assert steps == n and nxt.tolist() == [ep, t + n]
        assert reward == sum(0.5**k * (slot + k) for k in range(n))
        assert term == (ep == 0 and t + n == 5)


def test_n_step_transitions_do_not_run_from_the_newest_slot_into_the_oldest():
    buf = ReplayBuffer(10, 2, 1)
    fill(buf, [12])  # one episode longer than the ring: slot 1 is the newest step, slot 2 the oldest
    buf.terminated[1] = 0.0  # still running
    batch = buf.sample_transitions(200, np.random.default_rng(0), torch.device("cpu"), nstep=4, discount=1.0)
    for obs, nxt, steps in zip(batch.obs, batch.next_obs, batch.steps, strict=True):
        t = int(obs[1])
        assert steps == min(4, 12 - t) and nxt[1] == t + steps


def test_first_steps_are_the_episodes_starts_and_not_one_the_ring_cut():
    buf = ReplayBuffer(100, 2, 1)
    fill(buf, [5, 3, 7])
    assert buf.obs[buf.first_steps(), 1].tolist() == [0, 0, 0]  # t = 0 of each episode
    ring = ReplayBuffer(10, 2, 1)
    fill(ring, [5, 3, 7])  # the first episode and the start of the second were overwritten
    firsts = ring.first_steps()
    assert ring.obs[firsts].tolist() == [[2, 0]]  # the third episode's start; the second's cut start is none


def test_steps_into_episode_count_back_to_the_start_or_the_oldest_kept_step_up_to_the_cap():
    buf = ReplayBuffer(100, 2, 1)
    fill(buf, [5, 3, 7])
    slots = np.arange(len(buf))
    assert buf.steps_into_episode(slots, 4).tolist() == np.minimum(buf.obs[slots, 1], 4).tolist()
    ring = ReplayBuffer(10, 2, 1)
    fill(ring, [4, 3, 8])  # oldest first: episode 1's t = 1, 2 (its t = 0 overwritten), then episode 2's t = 0-7
    oldest_first = (ring.cursor + np.arange(10)) % 10
    assert ring.obs[oldest_first, 1].tolist() == [1, 2, 0, 1, 2, 3, 4, 5, 6, 7]
    assert ring.steps_into_episode(oldest_first, 4).tolist() == [0, 1, 0, 1, 2, 3, 4, 4, 4, 4]


def test_history_holds_the_step_before_and_the_episodes_first_observation():
    buf = ReplayBuffer(100, 2, 1)
    fill(buf, [3, 4])
    h = buf.history(np.arange(7))
    assert h.shape == (7, 2 * 2 + 1 + 2)
    assert h[:, :2].tolist() == [[0, 0], [0, 0], [0, 1], [0, 0], [1, 0], [1, 1], [1, 2]]  # o_{t-1}, 0 at t = 0
    assert h[:, 3].tolist() == [0, 1, 1, 0, 1, 1, 1]  # a step before is stored
    assert h[:, 4:6].tolist() == [[0, 0]] * 3 + [[1, 0]] * 4  # the episode's first observation
    assert h[:, 6].tolist() == [1] * 7
    ring = ReplayBuffer(10, 2, 1)
    fill(ring, [4, 3, 8])  # episode 1's first step was overwritten: it has no first observation
    oldest_first = (ring.cursor + np.arange(10)) % 10
    assert ring.history(oldest_first)[:, 6].tolist() == [0, 0] + [1] * 8
