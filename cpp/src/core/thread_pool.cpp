// Persistent worker threads; tasks are claimed from an atomic counter.
#include "core/thread_pool.h"

#include <exception>
#include <utility>

namespace diffrt {
namespace {
thread_local bool t_in_pool_task = false;
thread_local int t_thread = 0;  // this thread's index inside its pool
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::thread::hardware_concurrency());
  if (n_threads <= 0) n_threads = 1;
  n_threads_ = n_threads;
  for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::drain(int thread) {
  bool was = t_in_pool_task;
  t_in_pool_task = true;
  t_thread = thread;
  for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_tasks_;) {
    try {
      fn_(ctx_, i, thread);
    } catch (...) {  // an exception must not leave a worker thread (std::terminate): run() rethrows it
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
      next_.store(n_tasks_, std::memory_order_relaxed);  // skip the tasks not yet claimed
    }
  }
  t_in_pool_task = was;
}

void ThreadPool::worker(int thread) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    drain(thread);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (--busy_ == 0) cv_done_.notify_one();
    }
  }
}

void ThreadPool::run(int n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  if (t_in_pool_task || workers_.empty() || n_tasks == 1) {
    int thread = t_in_pool_task ? t_thread : 0;  // nested: keep the caller's scratch slot
    for (int i = 0; i < n_tasks; ++i) fn(ctx, i, thread);
    return;
  }
  std::lock_guard<std::mutex> run_lk(run_mutex_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = fn;
    ctx_ = ctx;
    n_tasks_ = n_tasks;
    next_.store(0, std::memory_order_relaxed);
    busy_ = int(workers_.size());
    ++generation_;
  }
  cv_work_.notify_all();
  drain(0);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_done_.wait(lk, [&] { return busy_ == 0; });
    error = std::exchange(error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace diffrt
