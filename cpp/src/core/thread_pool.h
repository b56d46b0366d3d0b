// A persistent pool of worker threads for data-parallel loops.
//
// parallel_for(n, f) calls f(task, thread) for task in [0, n) spread over the workers and the
// calling thread, and returns when all are done. It allocates nothing (the callable is passed by
// pointer), so it is safe inside a denoising step. A parallel_for issued from inside a task runs
// serially on that thread. One parallel_for at a time per pool (callers serialise on a mutex).
// A task that throws: the tasks not yet started are skipped and parallel_for rethrows the first
// exception on the calling thread, once every thread has left the run.
#pragma once
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace diffrt {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // 0: all cores
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }  // workers + the calling thread

  template <class F>
  void parallel_for(int n_tasks, F&& f) {
    using Fn = std::remove_reference_t<F>;
    run(
        n_tasks, [](void* ctx, int task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

 private:
  using TaskFn = void (*)(void*, int, int);
  void run(int n_tasks, TaskFn fn, void* ctx);
  void worker(int thread);
  void drain(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> next_{0};
  int busy_ = 0;              // workers still inside the current generation
  std::exception_ptr error_;  // the first exception a task of the current run threw (under mu_)
};

}  // namespace diffrt
