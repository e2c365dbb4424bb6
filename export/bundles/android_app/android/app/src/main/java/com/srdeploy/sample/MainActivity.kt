package com.srdeploy.sample

import android.app.Activity
import android.graphics.BitmapFactory
import android.os.Bundle
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.TextView
import java.util.concurrent.Executors

/** Upscales assets/input.png with the bundle's model and shows the result, with the time it took and where it ran:
 * ncnn on the GPU (Vulkan) where the phone has one, else the ExecuTorch program on the CPU where the bundle has one,
 * else ncnn's CPU path. */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val status = TextView(this).apply { text = "upscaling…" }
        val image = ImageView(this).apply { adjustViewBounds = true }
        setContentView(LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            addView(status)
            addView(image)
        })
        worker.execute {
            val input = assets.open("input.png").use { BitmapFactory.decodeStream(it) }
            val ncnn = Upscaler(assets)
            val upscaler = if (!ncnn.onVulkan && ExecuTorchRunner.inBundle(this)) {
                Upscaler(assets, ExecuTorchRunner(this))
            } else {
                ncnn
            }
            val start = System.nanoTime()
            val output = upscaler.upscale(input)
            val ms = (System.nanoTime() - start) / 1_000_000
            runOnUiThread {
                status.text = "${input.width}×${input.height} → ${output.width}×${output.height} in $ms ms " +
                    "(${upscaler.runsOn})"
                image.setImageBitmap(output)
            }
        }
    }

    override fun onDestroy() {
        worker.shutdown()
        super.onDestroy()
    }
}
